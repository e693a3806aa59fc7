#pragma once

// The endpoints of docs/protocol.md on top of the Cluster: authentication and authorization from
// the header (before any body is read), body parsing with errors that name the field, long polls
// (lease, log reads), log appends, uploads and downloads. Every answer that reflects a change is
// sent only after the store writer committed it. Runs on the io thread only.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "controlplane/cluster.h"
#include "controlplane/http_types.h"
#include "controlplane/log_budgets.h"
#include "controlplane/log_streams.h"
#include "controlplane/options.h"
#include "controlplane/worker.h"

namespace amlnode::controlplane {

struct ApiContext {
  boost::asio::io_context& io;
  Cluster& cluster;
  LogStreams& logs;
  Store& store;
  Worker& store_writer;
  Worker& file_worker;
  std::filesystem::path data_dir;
  Limits limits;
  // The scale hook and the thread it runs on (controlplane/scale_hook.h); "" for none.
  Worker& hook_worker;
  std::string scale_hook;
  std::chrono::seconds scale_hook_timeout{60};
};

class Api final : public Router {
 public:
  explicit Api(ApiContext context);
  ~Api() override;

  Routing route(const RequestHead& head) override;

  // Runs a lost-node sweep, stores what it changed, then serves the long polls waiting on the
  // runs it queued again or finished; `done` runs after all that.
  void sweep(std::function<void()> done);

  // Stores whatever the Cluster changed outside a request (start-up), then calls `done`.
  void commit_then(std::function<void(Result<void>)> done);

  // Drops every waiting long poll, which closes their connections; before shutting down.
  void shutdown();

 private:
  struct LeaseWaiter;
  struct LogWaiter;
  struct BarrierWaiter;
  struct LaunchWaiter;
  struct RunTarget;

  // After a sweep: each cluster whose target or leaving nodes changed since the hook last heard
  // of it gets the hook run (one call at a time per cluster); its outcome becomes the cluster's
  // errors.
  void run_scale_hooks();
  std::map<std::string, std::string> hooked_;  // cluster -> the decision the hook last took
  std::set<std::string> hooks_in_flight_;

  // A plan for an endpoint whose body, if any, is JSON.
  RoutePlan json_plan(std::function<void(Request, Responder)> handler) const;
  Routing route_computes(const RequestHead& head, const Caller& caller,
                         const std::vector<std::string>& path,
                         const std::map<std::string, std::string>& query);
  Routing route_nodes(const RequestHead& head, const Caller& caller,
                      const std::vector<std::string>& path);
  Routing route_runs(const RequestHead& head, const Caller& caller,
                     const std::vector<std::string>& path,
                     const std::map<std::string, std::string>& query);
  Routing list_runs(const Caller& caller, const std::map<std::string, std::string>& query);
  Routing route_run_file(const RequestHead& head, const Caller& caller, const std::string& run_id,
                         const std::string& action);
  Routing route_run_logs(const RequestHead& head, const Caller& caller, const std::string& run_id,
                         const std::string& stream,
                         const std::map<std::string, std::string>& query);

  void registration(const Caller& caller, const Request& request, Responder respond);
  void heartbeat(const std::string& node_id, const Request& request, Responder respond);
  void lease(const std::string& node_id, const Request& request, Responder respond);
  void deliver_lease(const std::string& node_id, int max_runs, Responder respond);
  void submit(const Request& request, Responder respond);
  void put_snapshot(const std::string& run_id, const Request& request, Responder respond);
  void post_status(const Caller& caller, const std::string& run_id, const Request& request,
                   Responder respond);
  void post_barrier(const Caller& caller, const std::string& run_id, const Request& request,
                    Responder respond);
  // Answers the shares waiting at the run's barrier: open, or (the run ended or moved to a new
  // epoch) with what their own call would now get.
  void wake_barrier_waiters(const std::string& run_id);
  // /v1/runs/{id}/launches...: daemon launches of a run across nodes, with its launch token.
  Routing route_launches(const RequestHead& head, const std::string& run_id,
                         const std::vector<std::string>& path);
  void post_launch(const std::string& bearer, const std::string& run_id, const Request& request,
                   Responder respond);
  // A take (node_rank set) or a wait for a launch's exit, answered now or when the run's launches
  // change (or its wait runs out).
  void wait_for_launch(std::shared_ptr<LaunchWaiter> waiter, double wait_seconds);
  bool try_answer(LaunchWaiter& waiter);
  // Also wakes the run's mini-batch long polls: both are answered for the launch token's epoch.
  void wake_launch_waiters(const std::string& run_id);
  // /v1/runs/{id}/parallel/...: a ParallelRunStep's mini-batches across nodes (api_parallel.cc),
  // with the launch token.
  struct ParallelWaiter;
  Routing route_parallel(const RequestHead& head, const std::string& run_id,
                         const std::vector<std::string>& path,
                         const std::map<std::string, std::string>& query);
  void exchange_parallel(const std::string& bearer, const std::string& run_id,
                         const Request& request, Responder respond);
  // Stores the rows of the exchange's outcomes that count, within the run's output limit.
  Result<void> store_parallel_rows(const std::string& run_id, const ParallelExchange& exchange,
                                   const std::vector<std::string_view>& rows);
  void wait_for_parallel(std::shared_ptr<ParallelWaiter> waiter, double wait_seconds);
  bool try_answer(ParallelWaiter& waiter);
  void wake_parallel_waiters(const std::string& run_id);
  // Answers the node rank's long polls with the run's state as it is, handing out nothing.
  void drop_parallel_waiters(const std::string& run_id, int node_rank);
  // Answers every waiter of the run that try_answer() can answer now, and forgets those.
  template <class Waiter>
  void wake_run_waiters(
      std::unordered_map<std::string, std::list<std::shared_ptr<Waiter>>>& waiters_by_run,
      const std::string& run_id) {
    auto found = waiters_by_run.find(run_id);
    if (found == waiters_by_run.end()) return;
    auto& waiters = found->second;
    for (auto it = waiters.begin(); it != waiters.end();) {
      auto waiter = *it;
      if (waiter->answered || try_answer(*waiter)) {
        waiter->answered = true;
        waiter->timer.cancel();
        it = waiters.erase(it);
      } else {
        ++it;
      }
    }
    if (waiters.empty()) waiters_by_run.erase(run_id);
  }
  Response parallel_output(const std::string& run_id, int from) const;
  void forget_parallel_rows();
  void put_log(const Caller& caller, const std::string& run_id, const std::string& stream,
               std::uint64_t offset, std::int64_t epoch, const Request& request, Responder respond);
  void get_log(const std::string& run_id, const std::string& stream, std::uint64_t offset,
               double wait_seconds, Responder respond);
  void put_outputs(const Caller& caller, const std::string& run_id, std::int64_t epoch,
                   const Request& request, Responder respond);

  // Answers `respond` with make() once everything changed so far is committed (503 if it fails).
  void respond_after_commit(Responder respond, std::function<Response()> make);
  void serve_lease_waiters(const std::string& compute_name);
  // Answers the run's log long polls that have bytes to read (all of them once the run ended, or
  // when `new_attempt` set the streams they waited on aside).
  void wake_log_waiters(const std::string& run_id, bool new_attempt = false);
  Result<void> start_new_attempts(const std::vector<LeasedRun>& leased);
  Result<int> requested_attempt(const std::string& run_id,
                                const std::map<std::string, std::string>& query) const;
  Response archived_log_response(const std::string& run_id, int attempt, const std::string& stream,
                                 std::uint64_t offset) const;
  Response log_read_response(const std::string& run_id, const std::string& stream,
                             std::uint64_t offset) const;
  std::filesystem::path run_dir(const std::string& run_id) const;
  std::string compute_of(const std::string& node_id) const;
  std::filesystem::path new_upload_path();

  // The part of a log chunk the stream's budgets leave room for, or the refusal (413).
  Result<std::string_view> within_budget(const std::string& run_id, const std::string& stream,
                                         const std::string& node_id, std::uint64_t offset,
                                         std::string_view bytes);
  // The last marker of each stream the node could not deliver in full (the run's dropped_logs).
  void mark_dropped_logs(const std::string& run_id, const nlohmann::json& dropped_logs);

  ApiContext ctx_;
  LogBudgets budgets_;
  std::map<std::string, std::list<std::shared_ptr<LeaseWaiter>>> lease_waiters_;  // by compute
  std::unordered_map<std::string, std::list<std::shared_ptr<LogWaiter>>> log_waiters_;  // by run
  std::unordered_map<std::string, std::list<std::shared_ptr<BarrierWaiter>>>
      barrier_waiters_;  // by run
  std::unordered_map<std::string, std::list<std::shared_ptr<LaunchWaiter>>>
      launch_waiters_;  // by run
  std::unordered_map<std::string, std::list<std::shared_ptr<ParallelWaiter>>>
      parallel_waiters_;                    // by run
  std::set<std::string> snapshot_uploads_;  // runs whose snapshot is being stored
  std::uint64_t next_upload_ = 0;
};

}  // namespace amlnode::controlplane
