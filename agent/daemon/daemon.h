#pragma once

// The node agent (`amlnode agent`): registers once, then heartbeats at the interval the control
// plane sets, reporting the node's state and the runs it holds, and obeys the commands the answers
// carry.
//
// Threads: one Boost.Asio io_context (the caller runs it) owns every member of Daemon; nothing
// here is locked. Calls that block (HTTP to the control plane, SQLite writes) run on a small
// worker pool and post their results back to the io_context.
//
// The control plane being unreachable is a normal condition: registration and heartbeats are
// retried (with backoff, at most the heartbeat interval apart) for as long as it takes, and
// nothing the node is doing stops meanwhile.

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "agent/daemon/control_plane_client.h"
#include "agent/daemon/log_shipper.h"
#include "agent/daemon/metrics_service.h"
#include "agent/daemon/run_execution.h"
#include "agent/daemon/settings.h"
#include "agent/daemon/state_store.h"
#include "agent/run_lifecycle.h"
#include "agent/run_record.h"
#include "spec/run_status.h"

namespace amlnode::agent {

struct DaemonOptions {
  AgentSettings settings;
  NodeFacts facts;
  // How runs execute here: config, state dir, clock, shim launcher (client is set by the daemon).
  RunEnvironment runs;
  // Retry delays when the control plane cannot be reached: doubling from the first to the last.
  std::chrono::milliseconds first_retry{200};
  std::chrono::milliseconds last_retry{5000};
  // How often the logs of running runs are delivered.
  std::chrono::milliseconds log_interval{250};
};

// How the daemon ended, for the process's exit code.
struct DaemonExit {
  int code = 0;         // 0 after a drain, 1 when it could not go on (e.g. registration refused)
  std::string message;  // why, for the log
};

// An error that may come back at every tick: logged when it first comes or changes, then once a
// minute with how often it came since.
struct RepeatedError {
  std::string message;
  std::chrono::steady_clock::time_point logged;
  std::uint64_t since_logged = 0;
  // Whether to log `text` now; sets what the line should say in `line`.
  bool due(const std::string& text, std::chrono::steady_clock::time_point now, std::string& line);
};

class Daemon {
 public:
  Daemon(boost::asio::io_context& io, DaemonOptions options,
         std::shared_ptr<ControlPlaneClient> client, std::shared_ptr<StateStore> store);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Loads or makes the node identity, then starts heartbeating. `on_exit` is called (on the
  // io_context) once the daemon has stopped; the caller then stops the io_context.
  void start(std::function<void(DaemonExit)> on_exit);

  // SIGTERM: take no new work, report `leaving`, and stop once no run is held.
  void drain();

  // A second SIGTERM: stop now. Runs go on under their shims and are picked up at the next start.
  void stop_now();

  // For tests and logs; read on the io_context thread only.
  const std::optional<NodeIdentity>& identity() const { return identity_; }
  std::string node_state() const;

  // For the service manager's STATUS= (agent/daemon/service_hooks.h); read on the io_context.
  // `listener` is called on the io_context whenever the node's state, the runs it holds or the
  // control plane's reachability may have changed, and once the held runs are recovered.
  void set_state_listener(std::function<void()> listener) { state_listener_ = std::move(listener); }
  bool recovered() const { return recovered_; }
  std::size_t held_runs() const { return runs_.size(); }
  const std::string& unusable_reason() const { return unusable_reason_; }
  bool control_plane_reachable() const { return control_plane_reachable_; }

  // A SIGHUP reload: takes node.run_concurrency (at most the value the daemon started with: the
  // pool was sized for it), node.lease_wait_seconds, node.min_free_bytes and the metrics section
  // (MetricsService::reconfigure) from `settings`, and images and environments from `config` for
  // runs prepared from now on. Nothing else changes.
  void reconfigure(const AgentSettings& settings, const NodeConfig& config);

 private:
  // A run this node holds, from its lease until the control plane has its terminal status.
  struct ActiveRun {
    LeasedRun lease;
    // The rules of the run's life (agent/run_lifecycle.h), and the status last recorded and put
    // in the outbox: the terminal status waits there until the run's logs are delivered.
    RunLifecycle lifecycle{std::chrono::seconds(15)};
    spec::RunStatus status = spec::RunStatus::Queued;
    // Its plan and runtime (agent/run_runtime.h), once prepared; the runtime is called from the
    // loop only while `preparing` is false (its launch is on the pool until then).
    std::shared_ptr<StartedRun> started;
    // Kills the run's processes when a stop is overdue (RunAction::Kill).
    std::shared_ptr<boost::asio::steady_timer> stop_timer;
    bool concluded = false;             // its process is over; it no longer takes a slot
    bool shipping = false;              // a log delivery for it is on the pool
    bool outputs_uploaded = false;      // ./outputs reached the control plane (or never will)
    std::optional<RunOutcome> outcome;  // set once concluded; reported after the last log bytes
    // The log bytes not delivered, by stream, as the last delivery found them
    // (ShipResult::dropped).
    nlohmann::json dropped_logs = nlohmann::json::object();
    // The last failure of a log delivery, said once and then once a minute while it repeats (a
    // full disk would otherwise fill the agent's log at every tick).
    RepeatedError delivery_error;
    // run.json in the run folder, kept as `amlnode run` keeps it; written only while the folder
    // is there to stay (not while a preparation may still remove and remake it).
    std::shared_ptr<RunRecord> record;
    bool record_writable = false;
    bool preparing = false;   // its preparation, launch or finding again is on the pool
    bool finalizing = false;  // its release and exit record are on the pool
    // Stopped by a preemption: no status is reported for it; once its logs are delivered the
    // node lets go of it and the control plane queues it again.
    bool preempted = false;
  };
  // A run stopped here (its lease moved on) whose process may still be ending: the same run is
  // not prepared here again until it has, or the new preparation would remove the run folder
  // under the old process, and the old shim would write its exit.json into the new one. A later
  // epoch leased to this node meanwhile waits in `deferred` (daemon_relet.cc).
  struct RetiringRun {
    std::shared_ptr<RunRuntime> runtime;  // abandoned; until nothing of the run is left
    bool preparing = false;               // its preparation or launch is still on the pool
    bool finalizing = false;  // its release is still on the pool (it reads the run folder)
    std::optional<LeasedRun> deferred;
  };

  // Runs `work` on the pool and `done` with its result on the io_context.
  template <class Work, class Done>
  void offload(Work work, Done done);
  // Same, on the strand that orders every state store write.
  template <class Work, class Done>
  void offload_store(Work work, Done done);

  void start_record(ActiveRun& run, bool resumed);
  void recover_runs();
  void on_recovered(Result<std::vector<HeldRunRecord>> held);
  void resume_run(const HeldRunRecord& record);
  void prepare_run(ActiveRun& run);
  void maybe_lease();
  void on_leased(Result<std::vector<LeasedRun>> leased);
  void accept_run(const LeasedRun& lease);
  void on_prepared(const std::string& run_id, Result<std::shared_ptr<StartedRun>> started);
  void on_launched(const std::string& run_id, const std::shared_ptr<StartedRun>& started,
                   Result<void> launched);
  void watch_run(ActiveRun& run);
  void on_run_exit(const std::string& run_id);
  // Docker (daemon_containers.cc): a held run looked for again once Docker answers, and the
  // health probe.
  void resume_later(const HeldRunRecord& record, const Error& why);
  void probe_docker();
  bool docker_ready() const;
  void conclude(ActiveRun& run, const RunOutcome& outcome);
  void ship_logs(ActiveRun& run);
  void on_logs_shipped(const std::string& run_id, Result<ShipResult> shipped, bool final,
                       bool with_outputs);
  void report_terminal(ActiveRun& run);
  void schedule_log_tick();
  void enter_status(ActiveRun& run, spec::RunStatus status, std::optional<int> exit_code = {},
                    std::optional<Error> error = {});
  // Records the status a lifecycle transition entered (not a terminal one: report_terminal does,
  // once the logs are delivered) and arms the overdue-stop timer.
  void apply(ActiveRun& run, const RunLifecycle::Transition& transition);
  void schedule_overdue_stop(ActiveRun& run);
  void resume_as_launched(ActiveRun& run);
  std::chrono::milliseconds stop_timeout() const;
  void kill_run_processes(ActiveRun& run);
  void flush_outbox();
  void release_batch_job(const std::string& run_id);
  void leave();
  // Preemption (daemon_preemption.cc).
  void start_event_polling();
  void poll_scheduled_events();
  void begin_preemption(const std::string& event_id);
  void let_go_of_preempted(const std::string& run_id);
  void maybe_acknowledge_preemption();
  void after_preempted_heartbeat(const HeartbeatReport& reported);
  void forget_run(const std::string& run_id);
  void stop_run(const std::string& run_id, const std::string& reason);
  // daemon_relet.cc: stopped runs until their process is gone, and leases of them meanwhile.
  void retire(ActiveRun& run);
  bool defer_while_retiring(const LeasedRun& lease);
  void check_retiring();
  void schedule_retiring_check();
  static bool still_retiring(RetiringRun& run);
  void cancel_run(const std::string& run_id);
  void maybe_finish_drain();
  void check_health();
  int free_slots() const;

  void load_identity();
  void register_node();
  void on_registered(Result<Registration> registration);
  std::string gpu_problem();
  void heartbeat_now();
  void on_heartbeat(Result<HeartbeatAnswer> answer, bool reported_leaving);
  void schedule_heartbeat(std::chrono::milliseconds delay);
  void handle_command(const Command& command);
  void retry_later(const Error& why, std::function<void()> step);
  void finish(DaemonExit exit);
  HeartbeatReport heartbeat_report() const;
  // The runs whose processes are live, for the metrics samples.
  std::vector<SampledRun> live_runs() const;
  void notify_state();

  boost::asio::io_context& io_;
  DaemonOptions options_;
  std::shared_ptr<ControlPlaneClient> client_;
  std::shared_ptr<StateStore> store_;
  // Threads: one can sit in a long poll, one heartbeats and delivers statuses, and each run being
  // prepared (an environment build can take minutes) holds one.
  boost::asio::thread_pool pool_;
  boost::asio::strand<boost::asio::thread_pool::executor_type> store_strand_;
  boost::asio::steady_timer heartbeat_timer_;
  boost::asio::steady_timer retry_timer_;
  boost::asio::steady_timer lease_retry_timer_;
  boost::asio::steady_timer outbox_retry_timer_;
  boost::asio::steady_timer log_timer_;
  boost::asio::steady_timer retiring_timer_;
  std::function<void(DaemonExit)> on_exit_;
  std::unique_ptr<MetricsService> metrics_;
  std::function<void()> state_listener_;

  // Results posted back from the pool check this first, so none reaches a destroyed daemon.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::optional<NodeIdentity> identity_;
  std::chrono::milliseconds heartbeat_interval_{5000};
  std::chrono::milliseconds retry_delay_;
  bool heartbeat_in_flight_ = false;
  bool recovered_ = false;  // the runs held before a restart are back in runs_
  bool lease_in_flight_ = false;
  bool outbox_busy_ = false;
  bool outbox_dirty_ = false;  // statuses were queued while a delivery was under way
  std::map<std::string, ActiveRun> runs_;
  std::map<std::string, RetiringRun> retiring_;
  // Runs canceled while being prepared; read on the pool by before_launch and by the environment
  // build (RunEnvironment::canceled), hence the lock.
  class CanceledRuns {
   public:
    void add(const std::string& id) {
      std::lock_guard lock(mutex_);
      ids_.insert(id);
    }
    void remove(const std::string& id) {
      std::lock_guard lock(mutex_);
      ids_.erase(id);
    }
    bool contains(const std::string& id) const {
      std::lock_guard lock(mutex_);
      return ids_.count(id) > 0;
    }

   private:
    mutable std::mutex mutex_;
    std::set<std::string> ids_;
  };
  std::shared_ptr<CanceledRuns> canceled_in_preparation_ = std::make_shared<CanceledRuns>();
  std::string last_unreachable_reason_;
  bool retiring_check_scheduled_ = false;
  bool control_plane_reachable_ = true;  // for logging an outage once, not on every retry
  bool draining_ = false;                // no new leases (SIGTERM, or the control plane's drain)
  // Told to leave (a scale-down), or ephemeral with its run over: the last heartbeat asks the
  // control plane to remove the node.
  // Preemption: the scheduled events endpoint, and the event being acted on.
  std::shared_ptr<HttpClient> events_client_;
  std::string events_target_;
  boost::asio::steady_timer events_timer_;
  bool preempted_ = false;
  bool preemption_acknowledged_ = false;
  bool preemption_reported_ = false;  // a `preempted` heartbeat with no run reached it
  bool acknowledging_ = false;
  std::string preempt_event_id_;
  // GPU health: the last sample checked, the XID total it counted, and what it found.
  std::uint64_t gpu_sample_checked_ = 0;
  std::uint64_t xids_checked_ = 0;
  std::string last_gpu_problem_;
  bool leave_for_good_ = false;
  std::chrono::steady_clock::time_point left_at_{};
  // How long a node leaving for good keeps asking an unreachable control plane to remove it.
  static constexpr std::chrono::minutes kLeaveRetry{5};
  // A run was leased (or held before a restart): an ephemeral node takes no other.
  bool had_run_ = false;
  bool exit_when_drained_ = false;  // SIGTERM: stop once the drain is done
  bool stopped_ = false;
  std::string unusable_reason_;
  // The last Docker health probe (nodes that run Docker jobs): "docker unavailable: ..." or "".
  std::string docker_unusable_;
  bool docker_probed_ = false;  // no lease before the first probe has answered
  bool docker_probe_in_flight_ = false;
};

// Defined here: the daemon's parts in other files (daemon_preemption.cc) offload too.
template <class Work, class Done>
void Daemon::offload(Work work, Done done) {
  std::weak_ptr<bool> alive = alive_;
  boost::asio::post(pool_, [this, alive, work = std::move(work), done = std::move(done)]() mutable {
    auto result = work();
    boost::asio::post(io_, [alive, done = std::move(done), result = std::move(result)]() mutable {
      if (alive.lock()) done(std::move(result));
    });
  });
}

}  // namespace amlnode::agent
