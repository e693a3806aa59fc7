#include "agent/daemon/daemon.h"

#include <spdlog/spdlog.h>
#include <sys/statvfs.h>
#include <sys/wait.h>

#include <boost/asio/post.hpp>
#include <cmath>
#include <cstring>

#include "agent/batch_task_folder.h"
#include "agent/daemon/log_setup.h"
#include "common/error_codes.h"
#include "executors/ranks.h"
#include "executors/run_folder.h"
#include "metrics/gpu_health.h"

namespace amlnode::agent {

namespace asio = boost::asio;

Daemon::Daemon(asio::io_context& io, DaemonOptions options,
               std::shared_ptr<ControlPlaneClient> client, std::shared_ptr<StateStore> store)
    : io_(io),
      options_(std::move(options)),
      client_(std::move(client)),
      store_(std::move(store)),
      pool_(2 + options_.settings.run_concurrency),
      store_strand_(boost::asio::make_strand(pool_.get_executor())),
      heartbeat_timer_(io),
      retry_timer_(io),
      lease_retry_timer_(io),
      outbox_retry_timer_(io),
      log_timer_(io),
      retiring_timer_(io),
      events_timer_(io),
      retry_delay_(options_.first_retry) {
  options_.runs.client = client_;
  options_.runs.before_launch = [store = store_, canceled = canceled_in_preparation_](
                                    const LeasedRun& lease) -> Result<void> {
    // Checked on the pool, right before the process would start: a cancel that came while the
    // run was being prepared (an environment build can take minutes) means it never starts.
    if (canceled->contains(lease.run_id))
      return Error{errors::kCanceled, "The run was canceled before its process started"};
    HeldRunRecord record;
    record.lease = lease;
    record.status = spec::to_string(spec::RunStatus::Preparing);
    return store->mark_launching(record);
  };
  options_.runs.canceled = [canceled = canceled_in_preparation_](const std::string& run_id) {
    return canceled->contains(run_id);
  };
  // Stored before the container starts; should this write fail, its label still finds it.
  options_.runs.on_container_created = [store = store_](const std::string& run_id,
                                                        const std::string& id) {
    if (auto saved = store->save_container_id(run_id, id); !saved.ok())
      spdlog::warn("run {}: container id not stored: {}", run_id, saved.error().message);
  };
  options_.runs.blocking = [pool = &pool_](std::function<void()> work) {
    asio::post(*pool, std::move(work));
  };
}

// Work still on the pool finishes (each call is bounded by its timeout) before the members it
// uses go away; its results are dropped, since `alive_` no longer lets them in.
Daemon::~Daemon() {
  alive_.reset();
  pool_.join();
}

template <class Work, class Done>
void Daemon::offload_store(Work work, Done done) {
  std::weak_ptr<bool> alive = alive_;
  asio::post(
      store_strand_, [this, alive, work = std::move(work), done = std::move(done)]() mutable {
        auto result = work();
        asio::post(io_, [alive, done = std::move(done), result = std::move(result)]() mutable {
          if (alive.lock()) done(std::move(result));
        });
      });
}

void Daemon::start(std::function<void(DaemonExit)> on_exit) {
  on_exit_ = std::move(on_exit);
  metrics_ =
      std::make_unique<MetricsService>(io_, options_.settings.metrics, options_.runs.state_dir,
                                       options_.runs.clock, [this] { return live_runs(); });
  metrics_->start();
  load_identity();
  schedule_log_tick();
}

std::vector<SampledRun> Daemon::live_runs() const {
  std::vector<SampledRun> live;
  for (const auto& [id, run] : runs_) {
    if (!run.started || run.concluded || run.preparing) continue;
    if (auto root = run.started->runtime->sampled_root())
      live.push_back({id, run.started->plan.run_dir, *root});
  }
  return live;
}

void Daemon::schedule_log_tick() {
  log_timer_.expires_after(options_.log_interval);
  log_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    for (auto& [id, run] : runs_) {
      if (run.started || run.outcome) ship_logs(run);
    }
    schedule_log_tick();
  });
}

bool RepeatedError::due(const std::string& text, std::chrono::steady_clock::time_point now,
                        std::string& line) {
  constexpr auto kEvery = std::chrono::minutes(1);
  if (text != message) {
    message = text;
    logged = now;
    since_logged = 0;
    line = text;
    return true;
  }
  ++since_logged;
  if (now - logged < kEvery) return false;
  line = text + " (again " + std::to_string(since_logged) + " times in the last minute)";
  logged = now;
  since_logged = 0;
  return true;
}

// After the run concluded, ./outputs goes first (once), then the logs to their last byte.
void Daemon::ship_logs(ActiveRun& run) {
  if (run.shipping || !identity_) return;
  run.shipping = true;
  bool final = run.outcome.has_value();
  bool with_outputs = final && !run.outputs_uploaded;
  offload(
      [env = options_.runs, client = client_, store = store_, node = *identity_, lease = run.lease,
       with_outputs]() -> Result<ShipResult> {
        // A run across nodes has one ./outputs at the control plane: the master's (node rank 0).
        if (with_outputs && lease.node_rank == 0) {
          if (auto uploaded = upload_run_outputs(env, node, lease); !uploaded)
            return uploaded.error();
        }
        auto run_dir = executors::RunFolder::of(env.state_dir, lease.run_id).root;
        SystemLog lifecycle(run_dir, env.clock);
        return ship_run_logs(
            *client, *store, node, lease.run_id, lease.epoch, run_dir,
            [&lifecycle](const std::string& line) { lifecycle.line(line); },
            lease.node_count > 1 ? lease.node_rank : -1, batch_root_dir(env.config, env.state_dir));
      },
      [this, id = run.lease.run_id, final, with_outputs](Result<ShipResult> shipped) {
        on_logs_shipped(id, std::move(shipped), final, with_outputs);
      });
}

// A concluded run reports its terminal status only once its logs are all delivered, so a
// reader who sees Completed finds the whole log.
// Only a delivery that began after the run concluded (`final`) can have seen the last bytes.
void Daemon::on_logs_shipped(const std::string& run_id, Result<ShipResult> shipped, bool final,
                             bool with_outputs) {
  auto found = runs_.find(run_id);
  if (found == runs_.end()) return;
  ActiveRun& run = found->second;
  run.shipping = false;
  if (!shipped.ok()) {
    if (shipped.error().code == errors::kStaleEpoch)
      return stop_run(run_id, shipped.error().message);
    std::string line;
    if (shipped.error().code != errors::kUnreachable && shipped.error().code != errors::kCanceled &&
        run.delivery_error.due(shipped.error().message, std::chrono::steady_clock::now(), line)) {
      spdlog::error("run {}: log delivery: {}", run_id, line);
    }
    return;  // the next tick tries again
  }
  run.delivery_error = {};
  if (with_outputs) run.outputs_uploaded = true;
  run.dropped_logs = nlohmann::json::object();
  for (const auto& [stream, dropped] : shipped->dropped)
    run.dropped_logs[stream] = {{"bytes", dropped.bytes}, {"why", dropped.why}};
  if (final && run.preempted) return let_go_of_preempted(run_id);
  if (final && run.status != run.outcome->status) report_terminal(run);
}

void Daemon::load_identity() {
  offload([store = store_] { return store->load_identity(); },
          [this](Result<std::optional<NodeIdentity>> loaded) {
            if (!loaded.ok()) return finish({1, loaded.error().message});
            if (!*loaded) return register_node();
            identity_ = std::move(**loaded);
            spdlog::info("node {}: identity loaded from the state store", identity_->node_id);
            heartbeat_now();
            flush_outbox();
            recover_runs();
          });
}

void Daemon::register_node() {
  if (stopped_) return;
  auto token = registration_token(options_.settings);
  if (!token.ok()) return finish({1, token.error().message});
  offload(
      [client = client_, store = store_, token = *token,
       facts = options_.facts]() -> Result<Registration> {
        // The key is stored before the token is spent: whatever happens to the answer (lost on
        // the wire, or this process killed before it stored the identity), registering again
        // with the same token and key gets the same identity back.
        auto key = store->registration_key();
        if (!key.ok()) return key.error();
        // With the token, the key gets this node's identity back: it is as secret as the token.
        redact_in_logs(*key);
        auto registration = client->register_node(token, facts, *key);
        if (!registration.ok()) return registration;
        if (auto saved = store->save_identity(registration->identity); !saved) return saved.error();
        return registration;
      },
      [this](Result<Registration> registration) { on_registered(std::move(registration)); });
}

void Daemon::on_registered(Result<Registration> registration) {
  if (!registration.ok()) {
    if (registration.error().code == errors::kUnreachable)
      return retry_later(registration.error(), [this] { register_node(); });
    return finish({1, "registration failed: " + registration.error().message});
  }
  identity_ = registration->identity;
  heartbeat_interval_ = registration->heartbeat_interval;
  spdlog::info("registered as node {}", identity_->node_id);
  heartbeat_now();
  recover_runs();
}

void Daemon::retry_later(const Error& why, std::function<void()> step) {
  // Said once, and again whenever the reason changes: a refused certificate or a wrong address is
  // then in the log without a line per retry.
  if (control_plane_reachable_ || why.message != last_unreachable_reason_)
    spdlog::warn("control plane unreachable ({}); retrying until it answers", why.message);
  last_unreachable_reason_ = why.message;
  control_plane_reachable_ = false;
  notify_state();
  retry_timer_.expires_after(retry_delay_);
  retry_timer_.async_wait([step = std::move(step)](const boost::system::error_code& ec) {
    if (!ec) step();
  });
  retry_delay_ = std::min(retry_delay_ * 2, options_.last_retry);
}

std::string Daemon::node_state() const {
  // A preempted node says so until its VM is gone; leaving wins otherwise: a drain ends with a
  // `leaving` heartbeat whatever else is wrong.
  if (preempted_) return "preempted";
  if (draining_) return "leaving";
  if (!unusable_reason_.empty()) return "unusable";
  bool preparing = false;
  for (const auto& [id, run] : runs_) {
    using spec::RunStatus;
    if (run.status == RunStatus::Running || run.status == RunStatus::CancelRequested ||
        run.status == RunStatus::Finalizing)
      return "running";
    preparing = preparing || run.status == RunStatus::Queued || run.status == RunStatus::Preparing;
  }
  return preparing ? "preparing" : "idle";
}

void Daemon::notify_state() {
  if (state_listener_) state_listener_();
}

void Daemon::reconfigure(const AgentSettings& settings, const NodeConfig& config) {
  options_.settings.run_concurrency = settings.run_concurrency;
  options_.settings.lease_wait = settings.lease_wait;
  options_.settings.min_free_bytes = settings.min_free_bytes;
  // Each preparation copies the run environment when it starts, so runs already being prepared
  // keep the images and environment options they started with.
  options_.runs.config.cpu_image = config.cpu_image;
  options_.runs.config.gpu_image = config.gpu_image;
  options_.runs.config.environments = config.environments;
  options_.settings.metrics = settings.metrics;
  if (metrics_) metrics_->reconfigure(settings.metrics);
  check_health();
  notify_state();
  maybe_lease();
}

HeartbeatReport Daemon::heartbeat_report() const {
  HeartbeatReport report;
  report.state = node_state();
  report.reason = unusable_reason_;
  for (const auto& [id, run] : runs_)
    report.runs.push_back({id, run.lease.epoch, spec::to_string(run.status)});
  // Only with nothing held or still ending here: the control plane removes the node at once.
  report.deregister =
      leave_for_good_ && report.state == "leaving" && runs_.empty() && retiring_.empty();
  return report;
}

// A node that cannot take runs says so rather than failing them: too little disk for run
// folders and environments. statvfs is quick enough for the event loop.
void Daemon::check_health() {
  std::string reason;
  struct statvfs disk {};
  if (::statvfs(options_.runs.state_dir.c_str(), &disk) == 0) {
    std::uint64_t free = static_cast<std::uint64_t>(disk.f_bavail) * disk.f_frsize;
    if (free < options_.settings.min_free_bytes) {
      reason = "disk full: " + std::to_string(free) + " bytes free in " +
               options_.runs.state_dir.string() + " (node.min_free_bytes is " +
               std::to_string(options_.settings.min_free_bytes) + ")";
    }
  }
  if (reason.empty()) reason = docker_unusable_;
  if (reason.empty()) reason = gpu_problem();
  if (reason == unusable_reason_) return;
  if (reason.empty()) {
    spdlog::info("usable again");
  } else {
    spdlog::error("unusable: {}", reason);
  }
  unusable_reason_ = reason;
  notify_state();
  if (reason.empty()) maybe_lease();
}

// The GPUs' health from the metrics' last NVML sample (metrics/gpu_health.h). An XID error makes
// the node unusable until a later sample shows no new one.
std::string Daemon::gpu_problem() {
  const auto* gpus = metrics_ ? metrics_->gpus() : nullptr;
  if (!gpus) return "";
  unsigned expected = options_.settings.expected_gpus.value_or(
      static_cast<unsigned>(std::max(0, nvidia_gpu_count())));
  auto health = metrics::check_gpu_health(*gpus, expected, xids_checked_);
  if (metrics_->gpu_samples() != gpu_sample_checked_) {
    gpu_sample_checked_ = metrics_->gpu_samples();
    if (!health.problem.empty())
      last_gpu_problem_ = health.problem;
    else
      last_gpu_problem_.clear();
    xids_checked_ = health.xids;
  }
  return last_gpu_problem_;
}

void Daemon::heartbeat_now() {
  if (stopped_ || !identity_ || heartbeat_in_flight_) return;
  check_health();
  probe_docker();
  heartbeat_timer_.cancel();
  heartbeat_in_flight_ = true;
  HeartbeatReport report = heartbeat_report();
  bool leaving = report.state == "leaving";
  // A preempted node's report, for the acknowledgement once it has reached the control plane.
  HeartbeatReport sent = report.state == "preempted" ? report : HeartbeatReport{};
  offload([client = client_, node = *identity_,
           report = std::move(report)] { return client->heartbeat(node, report); },
          [this, leaving, sent](Result<HeartbeatAnswer> answer) {
            bool delivered = answer.ok();
            on_heartbeat(std::move(answer), leaving);
            if (delivered && !stopped_) after_preempted_heartbeat(sent);
          });
}

void Daemon::on_heartbeat(Result<HeartbeatAnswer> answer, bool reported_leaving) {
  heartbeat_in_flight_ = false;
  if (stopped_) return;
  if (!answer.ok()) {
    if (answer.error().code == errors::kUnreachable) {
      if (control_plane_reachable_)
        spdlog::warn("control plane unreachable: {}", answer.error().message);
      control_plane_reachable_ = false;
      notify_state();
    } else {
      spdlog::error("heartbeat refused: {}", answer.error().message);
    }
    // Leaving for good waits until the control plane has removed the node (a 401: it is gone
    // already), for at most kLeaveRetry; a plain drain does not wait for a control plane that is
    // gone.
    if (leave_for_good_ && answer.error().code == errors::kUnauthorized)
      return finish({0, "left: the control plane no longer knows this node"});
    if (leave_for_good_ && std::chrono::steady_clock::now() - left_at_ < kLeaveRetry)
      return schedule_heartbeat(options_.last_retry);
    if (exit_when_drained_ && runs_.empty())
      return finish({0, "drained; the control plane did not take the last heartbeat"});
    schedule_heartbeat(
        std::min<std::chrono::milliseconds>(heartbeat_interval_, options_.last_retry));
    return;
  }
  if (!control_plane_reachable_) spdlog::info("control plane reachable again");
  control_plane_reachable_ = true;
  notify_state();
  retry_delay_ = options_.first_retry;
  heartbeat_interval_ = answer->heartbeat_interval;
  for (const auto& command : answer->commands) handle_command(command);
  if (draining_ && exit_when_drained_ && runs_.empty()) {
    // A drain that began while an earlier heartbeat was in flight still owes the control plane
    // the `leaving` one.
    if (leave_for_good_) {
      if (answer->removed) return finish({0, "left: removed by the control plane"});
      return schedule_heartbeat(std::min<std::chrono::milliseconds>(
          heartbeat_interval_, std::chrono::milliseconds(1000)));
    }
    if (reported_leaving) return finish({0, "drained"});
    return schedule_heartbeat(std::chrono::milliseconds(0));
  }
  schedule_heartbeat(heartbeat_interval_);
}

void Daemon::schedule_heartbeat(std::chrono::milliseconds delay) {
  heartbeat_timer_.expires_after(delay);
  heartbeat_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) heartbeat_now();
  });
}

int Daemon::free_slots() const {
  int held = 0;
  for (const auto& [id, run] : runs_) held += run.concluded ? 0 : 1;
  // A lease waiting for its earlier epoch's process to end holds its slot already.
  for (const auto& [id, retiring] : retiring_) held += retiring.deferred ? 1 : 0;
  return options_.settings.run_concurrency - held;
}

// Runs held before a restart come back before any new lease, so they keep their slots.
void Daemon::recover_runs() {
  offload_store([store = store_] { return store->load_runs(); },
                [this](Result<std::vector<HeldRunRecord>> held) { on_recovered(std::move(held)); });
}

void Daemon::on_recovered(Result<std::vector<HeldRunRecord>> held) {
  if (!held.ok()) return finish({1, held.error().message});
  for (const auto& record : *held) resume_run(record);
  recovered_ = true;
  notify_state();
  // After the runs held before a restart are back: a preemption must stop them too.
  start_event_polling();
  maybe_lease();
}

void Daemon::resume_run(const HeldRunRecord& record) {
  had_run_ = true;
  ActiveRun& run = runs_[record.lease.run_id];
  run.lease = record.lease;
  auto status = spec::run_status_from_string(record.status);
  run.status = status.value_or(spec::RunStatus::Queued);
  run.lifecycle = RunLifecycle::resumed(run.status, stop_timeout());
  start_record(run, true);
  if (status && spec::is_terminal(*status)) {
    // Its logs are delivered and its terminal status is in the outbox; the ack forgets it.
    run.concluded = true;
    return;
  }
  spdlog::info("run {}: held before the restart ({}); resuming it", record.lease.run_id,
               record.status);
  std::optional<executors::LaunchedShim> shim;
  if (record.shim_pid && record.shim_start_time) {
    shim = executors::LaunchedShim{*record.shim_pid, *record.shim_start_time};
  }
  // Finding it again is on the pool: a stop meanwhile waits for it (retire), as for a preparation.
  run.preparing = true;
  offload([env = options_.runs, lease = record.lease, shim, container = record.container_id,
           launching =
               record.launching] { return reattach_run(env, lease, shim, container, launching); },
          [this, id = record.lease.run_id, record](Result<std::shared_ptr<StartedRun>> started) {
            auto found = runs_.find(id);
            if (found == runs_.end() || found->second.lease.epoch != record.lease.epoch) {
              // Stopped meanwhile: what was found stops, unreported.
              auto retiring = retiring_.find(id);
              if (retiring != retiring_.end()) retiring->second.preparing = false;
              if (started.ok()) {
                (*started)->runtime->abandon();
                if (retiring != retiring_.end()) retiring->second.runtime = (*started)->runtime;
              }
              return check_retiring();
            }
            ActiveRun& again = found->second;
            again.preparing = false;
            if (!started.ok() && started.error().code == errors::kNotStarted)
              return prepare_run(again);
            if (!started.ok() && started.error().code == docker::kDockerUnavailable)
              return resume_later(record, started.error());
            if (!started.ok()) {
              auto ended = again.lifecycle.end({spec::RunStatus::Failed, started.error(), 125});
              return conclude(again, ended.outcome.value_or(RunOutcome{spec::RunStatus::Failed,
                                                                       started.error(), 125}));
            }
            again.started = *started;
            spdlog::info("run {}: {}", id, again.started->found);
            resume_as_launched(again);
            watch_run(again);
          });
}

void Daemon::maybe_lease() {
  if (!recovered_) return;
  if (stopped_ || draining_ || preempted_ || !identity_ || lease_in_flight_ ||
      !unusable_reason_.empty())
    return;
  // An ephemeral node takes one run.
  if (options_.settings.ephemeral && had_run_) return;
  if (!docker_ready()) return;
  int slots = free_slots();
  if (slots <= 0) return;
  lease_in_flight_ = true;
  offload(
      [client = client_, node = *identity_, slots, wait = options_.settings.lease_wait] {
        // Probed before each call: what a run across nodes would get here as its master.
        int port = executors::port_is_free(executors::kMasterPort) ? executors::kMasterPort
                                                                   : executors::pick_free_port();
        return client->lease(node, slots, wait, port > 0 ? port : executors::kMasterPort);
      },
      [this](Result<std::vector<LeasedRun>> leased) { on_leased(std::move(leased)); });
}

void Daemon::on_leased(Result<std::vector<LeasedRun>> leased) {
  lease_in_flight_ = false;
  if (stopped_) return;
  if (!leased.ok()) {
    if (leased.error().code != errors::kUnreachable)
      spdlog::error("lease refused: {}", leased.error().message);
    lease_retry_timer_.expires_after(options_.last_retry);
    lease_retry_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) maybe_lease();
    });
    return;
  }
  // Runs leased while a drain began are still this node's: they run.
  for (const auto& lease : *leased) accept_run(lease);
  maybe_lease();
}

void Daemon::accept_run(const LeasedRun& lease) {
  if (auto held = runs_.find(lease.run_id); held != runs_.end()) {
    if (lease.epoch <= held->second.lease.epoch) return;
    // The control plane moved the run on while this node was cut off, and gave it back: the
    // epoch held here is stale and stops; the new one starts once its process is gone.
    stop_run(lease.run_id, "leased to this node again with epoch " + std::to_string(lease.epoch));
  }
  // A lease answered while the node was being preempted: not started; the control plane
  // queues it again once a heartbeat does not list it.
  if (preempted_) {
    spdlog::info("run {} leased while preempted: not started", lease.run_id);
    return;
  }
  if (defer_while_retiring(lease)) return;
  spdlog::info("run {} leased (epoch {})", lease.run_id, lease.epoch);
  had_run_ = true;
  ActiveRun& run = runs_[lease.run_id];
  run.lease = lease;
  run.lifecycle = RunLifecycle(stop_timeout());
  start_record(run, false);
  prepare_run(run);
}

// run.json, as `amlnode run` keeps it. A run held before a restart carries on with the record it
// had, times included.
void Daemon::start_record(ActiveRun& run, bool resumed) {
  const LeasedRun& lease = run.lease;
  auto file = executors::RunFolder::of(options_.runs.state_dir, lease.run_id)
                  .path(executors::RunFolder::kRunRecord);
  std::optional<RunRecord> loaded;
  if (resumed) loaded = RunRecord::load(file, options_.runs.clock);
  if (loaded) {
    run.record = std::make_shared<RunRecord>(std::move(*loaded));
  } else {
    run.record =
        std::make_shared<RunRecord>(file, lease.run_id, lease.experiment_name, options_.runs.clock);
    run.record->set_job_file(lease.job_file_name);
    run.record->transition(spec::RunStatus::Queued);
  }
  run.record_writable = resumed;
}

// Preparation starts from an empty run folder: one an interrupted preparation left is removed.
void Daemon::prepare_run(ActiveRun& run) {
  apply(run, run.lifecycle.start(std::chrono::steady_clock::now()));
  run.record_writable = false;
  run.preparing = true;
  offload(
      [env = options_.runs, node = *identity_, lease = run.lease] {
        discard_run_folder(env, lease.run_id);
        return prepare_leased_run(env, node, lease);
      },
      [this, id = run.lease.run_id](Result<std::shared_ptr<StartedRun>> started) {
        on_prepared(id, std::move(started));
      });
}

void Daemon::on_prepared(const std::string& run_id, Result<std::shared_ptr<StartedRun>> started) {
  auto found = runs_.find(run_id);
  if (found == runs_.end()) {
    // Stopped while it was being prepared: nothing of it was started.
    auto retiring = retiring_.find(run_id);
    if (retiring != retiring_.end()) retiring->second.preparing = false;
    check_retiring();
    return;
  }
  ActiveRun& run = found->second;
  run.record_writable = true;
  auto now = std::chrono::steady_clock::now();
  if (!started.ok()) {
    run.preparing = false;
    canceled_in_preparation_->remove(run_id);
    if (started.error().code == errors::kStaleEpoch)
      return stop_run(run_id, started.error().message);
    auto failed = run.lifecycle.preparation_failed(started.error(), now);
    if (failed.outcome && failed.outcome->status == spec::RunStatus::Failed)
      spdlog::warn("run {} failed before it started: {}", run_id, started.error().message);
    return conclude(
        run, failed.outcome.value_or(RunOutcome{spec::RunStatus::Failed, started.error(), 125}));
  }
  run.started = *started;
  const executors::Plan& plan = run.started->plan;
  run.record->set_environment(executors::to_string(plan.environment_kind), plan.environment_hash,
                              run.started->runtime->image());
  // A cancel that came meanwhile concludes the run here, before anything of it starts.
  auto prepared = run.lifecycle.prepared(now);
  if (prepared.outcome) {
    run.preparing = false;
    canceled_in_preparation_->remove(run_id);
    return conclude(run, *prepared.outcome);
  }
  offload([env = options_.runs, node = *identity_, lease = run.lease,
           started = run.started] { return launch_leased_run(env, node, lease, *started); },
          [this, run_id, started = run.started](Result<void> launched) {
            on_launched(run_id, started, std::move(launched));
          });
}

void Daemon::on_launched(const std::string& run_id, const std::shared_ptr<StartedRun>& started,
                         Result<void> launched) {
  auto found = runs_.find(run_id);
  if (found == runs_.end() || found->second.started != started) {
    // Stopped while it was being launched: its processes must not run on unreported.
    auto retiring = retiring_.find(run_id);
    if (retiring != retiring_.end()) retiring->second.preparing = false;
    if (launched.ok()) {
      started->runtime->abandon();
      if (retiring != retiring_.end()) retiring->second.runtime = started->runtime;
    }
    check_retiring();
    return;
  }
  ActiveRun& run = found->second;
  run.preparing = false;
  canceled_in_preparation_->remove(run_id);
  auto now = std::chrono::steady_clock::now();
  if (!launched.ok() && launched.error().code == errors::kStaleEpoch)
    return stop_run(run_id, launched.error().message);
  if (!launched.ok()) {
    auto failed = run.lifecycle.preparation_failed(launched.error(), now);
    return conclude(
        run, failed.outcome.value_or(RunOutcome{spec::RunStatus::Failed, launched.error(), 125}));
  }
  // Watched first: a cancel that came while it was launching stops it through its runtime.
  watch_run(run);
  apply(run, run.lifecycle.launched(now));
}

// A run found again after a restart, whose process (or container) exists: it is Running, even
// when the restart came between its launch and storing that status.
void Daemon::resume_as_launched(ActiveRun& run) {
  auto now = std::chrono::steady_clock::now();
  if (run.lifecycle.phase() != RunPhase::Queued) return;
  apply(run, run.lifecycle.start(now));
  apply(run, run.lifecycle.prepared(now));
  apply(run, run.lifecycle.launched(now));
}

std::chrono::milliseconds Daemon::stop_timeout() const {
  // The supervisor's grace period, and a margin for its own SIGKILL sweep to land.
  return std::chrono::milliseconds(
             static_cast<long long>(std::ceil(options_.runs.kill_grace_seconds * 1000))) +
         std::chrono::seconds(5);
}

void Daemon::apply(ActiveRun& run, const RunLifecycle::Transition& transition) {
  if (transition.entered && !spec::is_terminal(*transition.entered))
    enter_status(run, *transition.entered);
  for (RunAction action : transition.actions) {
    if (action == RunAction::Stop) {
      if (run.started && !run.preparing) run.started->runtime->stop();
      schedule_overdue_stop(run);
    }
    if (action == RunAction::Kill) kill_run_processes(run);
  }
}

void Daemon::schedule_overdue_stop(ActiveRun& run) {
  auto deadline = run.lifecycle.next_deadline();
  if (!deadline) return;
  run.stop_timer = std::make_shared<asio::steady_timer>(io_, *deadline);
  run.stop_timer->async_wait(
      [this, id = run.lease.run_id, timer = run.stop_timer](const boost::system::error_code& ec) {
        if (ec || stopped_) return;
        auto found = runs_.find(id);
        if (found == runs_.end() || found->second.stop_timer != timer) return;
        apply(found->second, found->second.lifecycle.tick(std::chrono::steady_clock::now()));
      });
}

// A stop the supervisor has not carried out in time (a stopped or stuck shim): every process of
// the run is killed (through its cgroup, which ends the shim too; finalizing then finds no exit
// record). A container's stop is Docker's, with its own grace period.
void Daemon::kill_run_processes(ActiveRun& run) {
  if (!run.started || run.preparing) return;
  spdlog::warn("run {}: the stop was not carried out within the grace period: killing it",
               run.lease.run_id);
  run.started->runtime->kill();
}

void Daemon::watch_run(ActiveRun& run) {
  run.started->runtime->watch(io_, [this, id = run.lease.run_id] { on_run_exit(id); });
}

// Nothing of the run is left: Finalizing, then the outcome from the exit record its runtime
// releases.
void Daemon::on_run_exit(const std::string& run_id) {
  auto found = runs_.find(run_id);
  if (found == runs_.end()) return;
  ActiveRun& run = found->second;
  run.stop_timer.reset();
  apply(run, run.lifecycle.process_ended(std::chrono::steady_clock::now()));
  run.finalizing = true;
  offload(
      [env = options_.runs, started = run.started] {
        return finalize_run(env, started->plan, started->runtime->release());
      },
      [this, run_id, started = run.started](RunOutcome outcome) {
        auto again = runs_.find(run_id);
        if (again == runs_.end() || again->second.started != started) {
          // Stopped while it was being finalized: a later epoch waits for this to end.
          auto retiring = retiring_.find(run_id);
          if (retiring != retiring_.end()) retiring->second.finalizing = false;
          return check_retiring();
        }
        ActiveRun& run = again->second;
        run.finalizing = false;
        conclude(run, canceled_if_stopped(outcome, run.lifecycle.cancel_requested()));
      });
}

void Daemon::conclude(ActiveRun& run, const RunOutcome& outcome) {
  // The lifecycle ends here whichever way the run got here: finalized after its process ended,
  // or ended early (a failed preparation, a process that could not be found again).
  auto now = std::chrono::steady_clock::now();
  if (run.lifecycle.phase() == RunPhase::Finalizing) {
    run.lifecycle.finalized(outcome, now);
  } else {
    run.lifecycle.end(outcome);
  }
  run.stop_timer.reset();
  run.concluded = true;
  run.started.reset();  // releases the environment lease
  run.outcome = outcome;
  ship_logs(run);
  maybe_lease();
}

void Daemon::report_terminal(ActiveRun& run) {
  const RunOutcome& outcome = *run.outcome;
  std::optional<int> exit_code;
  if (outcome.status != spec::RunStatus::Canceled || outcome.exit_code >= 0)
    exit_code = outcome.exit_code;
  spdlog::info("run {} {}", run.lease.run_id, spec::to_string(outcome.status));
  enter_status(run, outcome.status, exit_code, outcome.error);
}

// Statuses go through the persisted outbox: stored first, then delivered in order until
// acknowledged, so none is lost to a restart or an outage.
void Daemon::enter_status(ActiveRun& run, spec::RunStatus status, std::optional<int> exit_code,
                          std::optional<Error> error) {
  run.status = status;
  notify_state();
  // A preempted run's end is not its own: the control plane queues it again instead.
  if (run.preempted) return;
  std::optional<RunRecord> run_json;
  nlohmann::json timings = nlohmann::json::object();
  if (run.record) {
    run.record->transition(status);
    if (exit_code) run.record->set_exit_code(*exit_code);
    if (error) run.record->set_error(*error);
    timings = run.record->to_json()["durations"];
    if (run.record_writable) run_json = *run.record;
  }
  StatusReport report{run.lease.run_id, run.lease.epoch,  spec::to_string(status),
                      exit_code,        std::move(error), std::move(timings)};
  if (spec::is_terminal(status)) report.dropped_logs = run.dropped_logs;
  HeldRunRecord record{run.lease, spec::to_string(status), {}, {}};
  if (run.started && !run.preparing) {
    if (auto shim = run.started->runtime->shim()) {
      record.shim_pid = shim->pid;
      record.shim_start_time = shim->start_time;
    }
  }
  offload_store(
      [store = store_, report = std::move(report), record = std::move(record),
       run_json = std::move(run_json)]() -> Result<void> {
        // run.json is for people and local tools; failing to write it does not hold the run.
        if (run_json) {
          auto terminal = spec::is_terminal(run_json->status());
          if (auto written = run_json->save(terminal); !written)
            spdlog::warn("run {}: run.json: {}", report.run_id, written.error().message);
        }
        if (auto saved = store->save_run(record); !saved) return saved;
        auto queued = store->enqueue_status(report);
        if (!queued.ok()) return queued.error();
        return ok();
      },
      [this](Result<void> stored) {
        if (!stored.ok()) spdlog::error("{}", stored.error().message);
        flush_outbox();
      });
}

namespace {

struct Delivery {
  std::vector<std::string> finished;  // runs whose terminal status was acknowledged
  std::vector<std::pair<std::string, std::string>> stale;  // runs the control plane moved away
  bool unreachable = false;
};

Delivery deliver(ControlPlaneClient& client, StateStore& store, const NodeIdentity& node) {
  Delivery delivery;
  auto pending = store.pending_statuses();
  if (!pending.ok()) {
    spdlog::error("{}", pending.error().message);
    return delivery;
  }
  for (const auto& entry : *pending) {
    auto answer = client.report_status(node, entry.report);
    if (!answer.ok() && answer.error().code == errors::kUnreachable) {
      delivery.unreachable = true;
      break;
    }
    if (!answer.ok() && answer.error().code == errors::kStaleEpoch) {
      delivery.stale.emplace_back(entry.report.run_id, answer.error().message);
    } else if (!answer.ok()) {
      // A refusal other than an outage will not change by retrying; keeping it would stop every
      // later report behind it.
      spdlog::error("status {} of run {} refused: {}", entry.report.status, entry.report.run_id,
                    answer.error().message);
    }
    if (auto acked = store.acknowledge_status(entry.seq); !acked)
      spdlog::error("{}", acked.error().message);
    if (answer.ok() &&
        spec::is_terminal(
            spec::run_status_from_string(entry.report.status).value_or(spec::RunStatus::Running))) {
      delivery.finished.push_back(entry.report.run_id);
    }
  }
  return delivery;
}

}  // namespace

void Daemon::flush_outbox() {
  if (stopped_ || !identity_) return;
  if (outbox_busy_) {
    outbox_dirty_ = true;
    return;
  }
  outbox_busy_ = true;
  outbox_dirty_ = false;
  offload_store([client = client_, store = store_,
                 node = *identity_] { return deliver(*client, *store, node); },
                [this](Delivery delivery) {
                  outbox_busy_ = false;
                  for (const auto& [id, reason] : delivery.stale) stop_run(id, reason);
                  for (const auto& id : delivery.finished) {
                    release_batch_job(id);
                    forget_run(id);
                  }
                  if (delivery.unreachable) {
                    outbox_retry_timer_.expires_after(options_.last_retry);
                    outbox_retry_timer_.async_wait([this](const boost::system::error_code& ec) {
                      if (!ec) flush_outbox();
                    });
                  } else if (outbox_dirty_) {
                    flush_outbox();
                  }
                });
}

// A Batch task's job folder goes once its run's end is delivered, unless the step keeps it
// (delete_batch_job_after_finish: false).
void Daemon::release_batch_job(const std::string& run_id) {
  offload(
      [env = options_.runs, run_id] {
        remove_batch_job_folder(executors::RunFolder::of(env.state_dir, run_id).root,
                                batch_root_dir(env.config, env.state_dir));
        return ok();
      },
      [](Result<void>) {});
}

void Daemon::forget_run(const std::string& run_id) {
  auto found = runs_.find(run_id);
  if (found == runs_.end()) return;
  canceled_in_preparation_->remove(run_id);
  runs_.erase(found);
  notify_state();
  offload_store([store = store_, run_id] { return store->drop_run(run_id); },
                [](Result<void> dropped) {
                  if (!dropped.ok()) spdlog::error("{}", dropped.error().message);
                });
  maybe_acknowledge_preemption();
  if (options_.settings.ephemeral && runs_.empty() && !leave_for_good_) {
    spdlog::info("ephemeral node: its run is over; leaving");
    return leave();
  }
  maybe_lease();
  maybe_finish_drain();
}

// The lease moved on (a stale epoch): the run stops here without reporting anything more, so it
// never finishes twice.
void Daemon::stop_run(const std::string& run_id, const std::string& reason) {
  auto found = runs_.find(run_id);
  if (found == runs_.end()) return;
  spdlog::warn("run {}: stopping it here: {}", run_id, reason);
  retire(found->second);
  forget_run(run_id);
}

void Daemon::cancel_run(const std::string& run_id) {
  auto found = runs_.find(run_id);
  if (found == runs_.end()) return;
  ActiveRun& run = found->second;
  if (run.concluded) {
    // Its process is over and only its logs are still on their way (maybe for good, if the
    // control plane keeps failing to store them): a cancel stops the wait, so the run reaches its
    // terminal status now. Delivery goes on until the control plane acknowledges that status.
    if (run.outcome && run.status != run.outcome->status) {
      SystemLog(executors::RunFolder::of(options_.runs.state_dir, run_id).root, options_.runs.clock)
          .line(
              "canceled while its logs were being delivered: its status is reported without "
              "waiting for the rest of them");
      report_terminal(run);
    }
    return;
  }
  // Being prepared or launched: the process will not be started (before_launch), and the run
  // ends Canceled as soon as that returns. The control plane sees CancelRequested now. A running
  // one is told to stop (RunAction::Stop).
  if (run.preparing) canceled_in_preparation_->add(run_id);
  apply(run, run.lifecycle.cancel(std::chrono::steady_clock::now()));
}

void Daemon::handle_command(const Command& command) {
  if (command.type == wire::kCommandDrain) {
    spdlog::info("the control plane asks this node to drain");
    draining_ = true;
    notify_state();
    return;
  }
  if (command.type == wire::kCommandLeave) {
    if (leave_for_good_) return;
    spdlog::info("the control plane asks this node to leave (a scale-down)");
    return leave();
  }
  if (command.type == wire::kCommandCancel) return cancel_run(command.run_id);
  if (command.type == wire::kCommandStop) return stop_run(command.run_id, command.reason);
  spdlog::warn("ignoring the control plane's {} command for run {}: this node holds no such run",
               command.type, command.run_id);
}

// Leaving for good: a drain whose last heartbeat asks the control plane to remove the node, after
// which the agent exits 0 and whatever manages the VM may delete it.
void Daemon::leave() {
  leave_for_good_ = true;
  left_at_ = std::chrono::steady_clock::now();
  drain();
}

void Daemon::drain() {
  if (stopped_) return;
  spdlog::info("draining: no new runs; stopping once no run is held");
  draining_ = true;
  notify_state();
  exit_when_drained_ = true;
  // The last heartbeat tells the control plane the node is leaving; once it is answered (or the
  // control plane is unreachable) and no run is held, the daemon stops.
  if (!identity_) return finish({0, "drained before registration"});
  maybe_finish_drain();
}

// A drain ends with a last `leaving` heartbeat once no run is held (or at once when the control
// plane is unreachable: nobody is listening).
void Daemon::maybe_finish_drain() {
  if (!exit_when_drained_ || !runs_.empty() || stopped_) return;
  if (!control_plane_reachable_) return finish({0, "drained; the control plane was unreachable"});
  heartbeat_now();
}

void Daemon::stop_now() {
  finish({0, "stopped"});
}

void Daemon::finish(DaemonExit exit) {
  if (stopped_) return;
  stopped_ = true;
  heartbeat_timer_.cancel();
  retry_timer_.cancel();
  lease_retry_timer_.cancel();
  events_timer_.cancel();
  outbox_retry_timer_.cancel();
  log_timer_.cancel();
  if (metrics_) metrics_->stop();
  // A long poll in flight would hold the stop up for its whole wait.
  client_->shut_down();
  // Runs go on without the agent; only the watches of them end here.
  for (auto& [id, run] : runs_) {
    if (run.started && !run.preparing) run.started->runtime->detach();
  }
  if (exit.code != 0)
    spdlog::error("{}", exit.message);
  else
    spdlog::info("{}", exit.message);
  if (on_exit_) asio::post(io_, [callback = on_exit_, exit] { callback(exit); });
}

}  // namespace amlnode::agent
