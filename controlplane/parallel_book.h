#pragma once

// The mini-batches of a ParallelRunStep across nodes (docs/parallel-run.md, "Across nodes"): the
// control plane hands them out to every node of the run under the run's epoch, counts each
// outcome once, and knows which try's rows make the output. State and rules only, as the Cluster
// is: no I/O and no clock (the caller passes the time); every change is left in dirty() for the
// Cluster to store, and a restarted control plane rebuilds the same book (restore()).
//
// Hand-outs are leases: each names the node rank and epoch it went to. A new epoch (the run was
// placed again after a node was lost) returns every older hand-out to the queue uncounted, and a
// node's exchange names every hand-out it still holds, so one whose answer never reached it (a
// dropped connection) goes back too.

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "controlplane/records.h"
#include "parallel/scheduler.h"

namespace amlnode::controlplane {

struct ParallelPlan {
  std::string digest;  // of the mini-batches as the nodes cut them (all must agree)
  std::vector<std::int64_t> items;
  parallel::SchedulerRules rules;
  int node_count = 1;
  int workers_per_node = 1;
};

struct ParallelOutcome {
  parallel::Assignment assignment;
  bool ok = false;
  std::int64_t items = 0;
  std::int64_t rows = 0;
  std::uint64_t rows_bytes = 0;  // the rows that came with it (the caller stored them)
  parallel::TryError error;
};

struct ParallelExchange {
  int node_rank = 0;
  std::vector<ParallelOutcome> outcomes;
  std::vector<std::uint64_t> held;  // tickets the node holds (queued there or running)
  int want = 0;                     // more mini-batches it can take now
  int init_failures = 0;            // on the node since its share started
  parallel::TryError init_error;    // the node's first init() failure, when it had one
  std::string leaving;              // the node takes nothing more, and why ("" when it stays)
  parallel::TryError leaving_error;
};

struct ParallelAnswer {
  std::vector<parallel::Assignment> assignments;
  parallel::RunVerdict verdict = parallel::RunVerdict::Running;
  std::string failure;
  std::optional<parallel::TryError> first_error;
  parallel::Progress progress;
};

// One mini-batch as the store keeps it.
struct ParallelBatchRecord {
  parallel::BatchState state;
  int node_rank = -1;  // of the hand-out in flight
  std::int64_t epoch = 0;
  std::uint64_t rows_bytes = 0;  // of its counted try's rows
};

class ParallelBook {
 public:
  // The rule across nodes for init(): the run fails once init() has failed 2 x node_count x
  // process_count_per_node times on its nodes together and the run is this old.
  static constexpr Millis kInitFailureWindow = 120'000;

  ParallelBook(ParallelPlan plan, std::int64_t epoch, Millis created_at);
  static ParallelBook restore(ParallelPlan plan, std::int64_t epoch, Millis created_at,
                              const std::vector<ParallelBatchRecord>& batches,
                              std::optional<parallel::TryError> first_error);

  const ParallelPlan& plan() const { return plan_; }
  std::int64_t epoch() const { return epoch_; }
  Millis created_at() const { return created_at_; }

  // The run was placed again: every hand-out of an older epoch goes back to the queue.
  void enter_epoch(std::int64_t epoch);
  // Whether node rank `rank`'s successful outcome would count now (its rows are then worth
  // storing): the hand-out in flight to that rank in the current epoch, while the run goes on.
  bool counts(const parallel::Assignment& assignment, int rank) const;
  // Whether node rank `rank` stopped taking mini-batches (its init() failed too often).
  bool left(int rank) const { return left_.count(rank) > 0; }
  // Applies a node's outcomes, returns what it no longer holds, and hands out up to `want` more.
  ParallelAnswer exchange(const ParallelExchange& exchange, Millis now);
  // The run failed for a reason outside the scheduler's rules (its output grew too large).
  void fail(const std::string& why);
  ParallelAnswer status() const;
  parallel::RunVerdict verdict() const;
  // Whether a mini-batch waits to be handed out (a retry, or one never tried).
  bool has_work() const { return scheduler_.has_work(); }

  // The counted try of a mini-batch that succeeded: whose rows make the output.
  std::optional<std::uint64_t> counted_ticket(int mini_batch) const;
  int size() const { return scheduler_.size(); }
  std::uint64_t rows_bytes() const { return rows_bytes_; }

  ParallelBatchRecord record(int mini_batch) const;
  // The mini-batches changed since the last call, and whether the plan's own fields (the first
  // error, the failure) did.
  std::vector<int> take_dirty();
  bool take_plan_dirty();
  // As the store keeps them: the plan with the book's own fields, and each mini-batch's record.
  nlohmann::json plan_json() const;
  nlohmann::json record_json(int mini_batch) const;
  static std::optional<ParallelPlan> plan_from_json(const nlohmann::json& in);
  // The book the store's plan and records (by mini-batch; one with none is untouched) describe;
  // nullopt when they do not make one.
  static std::optional<ParallelBook> from_store(
      const nlohmann::json& plan_json, const std::vector<std::pair<int, nlohmann::json>>& records);
  std::string failure() const;

 private:
  void hand_out(int node_rank, int want, std::vector<parallel::Assignment>& out);
  void release(int mini_batch);
  void hold(int mini_batch, int rank, std::uint64_t ticket);
  void unhold(int mini_batch);

  ParallelPlan plan_;
  parallel::Scheduler scheduler_;
  std::int64_t epoch_ = 0;
  Millis created_at_ = 0;
  std::vector<int> holder_rank_;  // per mini-batch in flight: its node rank
  std::vector<std::int64_t> holder_epoch_;
  // Per node rank, its hand-outs in flight in the current epoch (ticket -> mini-batch), so that an
  // exchange looks at what the node holds, never at every mini-batch of the run.
  std::vector<std::map<std::uint64_t, int>> held_by_rank_;
  std::vector<std::uint64_t> batch_rows_bytes_;
  std::set<int> dirty_;
  bool plan_dirty_ = false;
  std::vector<int> init_failures_;  // per node rank, this epoch
  std::set<int> left_;              // node ranks that take nothing more
  std::string left_reason_;
  std::optional<parallel::TryError> left_error_;
  std::string failure_;  // fail() or a rule across nodes; the scheduler's own otherwise
  std::uint64_t rows_bytes_ = 0;
};

}  // namespace amlnode::controlplane
