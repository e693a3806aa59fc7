#pragma once

// The mini-batch scheduler of a ParallelRunStep (docs/parallel-run.md): which mini-batch a free
// worker takes next, what each outcome does to the run, and when the run is over. State and rules
// only, no I/O and no clock (a timeout is an outcome the caller reports), so the same scheduler
// serves `amlnode run` in-process and the control plane across nodes, and tests drive it directly.
//
// The rules are Azure ML's (ParallelRunConfig):
//   - a mini-batch is tried at most run_max_try times; a try fails when run() raises, returns the
//     wrong shape, runs past run_invocation_timeout, or its worker dies;
//   - error_threshold counts failed items: every item of a mini-batch that failed all its tries,
//     and for append_row the items a successful try returned no row for (-1: no limit); a try
//     that will be retried (a killed worker, a flaky input) counts nothing yet;
//   - allowed_failed_count counts mini-batches whose last try failed (a later success un-counts
//     one; -1: no limit);
//   - allowed_failed_percent is checked once every mini-batch has been handed out (-1: no limit);
//   - going over any of them fails the run, with the first error a try reported.

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

namespace amlnode::parallel {

struct SchedulerRules {
  int run_max_try = 3;
  std::int64_t error_threshold = -1;
  std::int64_t allowed_failed_count = -1;
  double allowed_failed_percent = -1;
  // append_row: a try that returns fewer rows than it had items failed the difference.
  bool count_missing_rows = true;
};

// What a try reported when it failed: the entry script's exception and traceback, or what the
// worker saw (a timeout, the worker's death).
struct TryError {
  std::string message;
  std::string traceback;
};

// A mini-batch handed to a worker: its index, which try this is (1-based), and the epoch of the
// hand-out (an outcome for an older hand-out of the same mini-batch is ignored).
struct Assignment {
  int mini_batch = 0;
  int attempt = 1;
  std::uint64_t ticket = 0;
};

enum class RunVerdict { Running, Completed, Failed };

// One mini-batch's state, as the control plane stores it so that a restart rebuilds the same
// scheduler (Scheduler::restore).
struct BatchState {
  std::int64_t items = 0;
  int tries = 0;
  bool done = false;         // succeeded
  bool failed_last = false;  // its last try failed
  bool given_up = false;     // failed run_max_try times
  bool in_flight = false;
  std::uint64_t ticket = 0;  // of the current (or last) hand-out
  std::int64_t missing_rows = 0;
  std::int64_t rows = 0;  // returned by its successful try
};

struct Progress {
  int total = 0;
  int scheduled = 0;  // handed out at least once
  int processed = 0;  // succeeded
  int failed = 0;     // last try failed (final or awaiting a retry)
  int in_flight = 0;  // handed out now
  std::int64_t failed_items = 0;
  std::int64_t rows = 0;  // returned by successful tries
};

class Scheduler {
 public:
  // `items` holds each mini-batch's item count (files, or rows for a table when known; a table's
  // mini-batch whose rows are not counted yet gives 0 and is counted when it is read).
  Scheduler(std::vector<std::int64_t> items, SchedulerRules rules);
  // The scheduler whose mini-batches are in `states` (as batch_state() gave them), with the first
  // error a try reported; the counters and the retry queue are derived from the states.
  static Scheduler restore(std::vector<BatchState> states, SchedulerRules rules,
                           std::optional<TryError> first_error);

  // The next mini-batch for a free worker: retries first, then the next never tried. nullopt
  // when there is none now (all handed out or done) or the run is over.
  std::optional<Assignment> next();
  // A try succeeded with `rows` result rows from `items` inputs (items may correct the count the
  // scheduler was given, for a table read only now). Returns false when the ticket is stale.
  bool succeeded(const Assignment& assignment, std::int64_t items, std::int64_t rows);
  // A try failed; the mini-batch goes back for another try unless it had run_max_try. `items`
  // corrects the item count as succeeded() does (a table's rows, when the worker read them).
  bool failed(const Assignment& assignment, TryError error, std::int64_t items = 0);
  // A hand-out whose worker never ran it to an outcome through no fault of the mini-batch (its
  // node lost its epoch, or never received it): it goes back to the front of the queue and the
  // try is not counted. Returns false when the ticket is stale.
  bool release(const Assignment& assignment);

  RunVerdict verdict() const { return verdict_; }
  // Whether next() would hand out a mini-batch now.
  bool has_work() const {
    return verdict_ == RunVerdict::Running &&
           (!retries_.empty() || next_fresh_ < static_cast<int>(batches_.size()));
  }
  // Why the run failed: which rule, then the first error a try reported.
  const std::string& failure() const { return failure_; }
  const std::optional<TryError>& first_error() const { return first_error_; }
  Progress progress() const;
  // Mini-batch i's outcome so far: whether it succeeded, and how many tries it had.
  bool succeeded_batch(int mini_batch) const { return batches_.at(mini_batch).done; }
  int tries(int mini_batch) const { return batches_.at(mini_batch).tries; }
  const BatchState& batch_state(int mini_batch) const { return batches_.at(mini_batch); }
  int size() const { return static_cast<int>(batches_.size()); }
  // The current hand-out of a mini-batch in flight; nullopt when it is not in flight.
  std::optional<Assignment> in_flight(int mini_batch) const;

 private:
  using Batch = BatchState;
  bool current(const Assignment& assignment) const;
  void check_rules();
  void fail_run(std::string why);
  bool all_settled() const;

  SchedulerRules rules_;
  std::vector<Batch> batches_;
  std::deque<int> retries_;
  int next_fresh_ = 0;
  std::uint64_t next_ticket_ = 1;
  int failed_batches_ = 0;
  std::int64_t failed_items_ = 0;
  std::int64_t rows_ = 0;
  int processed_ = 0;
  int given_up_ = 0;
  int in_flight_ = 0;
  RunVerdict verdict_ = RunVerdict::Running;
  std::string failure_;
  std::optional<TryError> first_error_;
};

std::string to_string(RunVerdict verdict);

}  // namespace amlnode::parallel
