// The Daemon's handling of Docker runs: their containers are created, started, supervised and
// released from the event loop, with every Engine API call on the worker pool.

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include "agent/daemon/container_runs.h"
#include "agent/daemon/daemon.h"
#include "executors/shim/launcher.h"

namespace amlnode::agent {

namespace asio = boost::asio;

namespace {

// A Docker daemon that takes longer than this to answer a ping is reported unusable.
constexpr std::chrono::milliseconds kDockerProbeLimit{5000};
// How often a run held before a restart is looked for again while Docker cannot be reached.
constexpr std::chrono::milliseconds kResumeRetry{2000};

// Daemon::offload for this file (its template is private to daemon.cc): `work` on the pool,
// `done` with its result on the event loop while the daemon is alive.
template <class Work, class Done>
void on_pool(asio::thread_pool& pool, asio::io_context& io, std::weak_ptr<bool> alive, Work work,
             Done done) {
  asio::post(pool, [&io, alive, work = std::move(work), done = std::move(done)]() mutable {
    auto result = work();
    asio::post(io, [alive, done = std::move(done), result = std::move(result)]() mutable {
      if (alive.lock()) done(std::move(result));
    });
  });
}

}  // namespace

// Running begins with creating and starting the container, as it begins with launching the shim
// for a process run.
void Daemon::launch_container(ActiveRun& run) {
  on_pool(
      pool_, io_, alive_,
      [env = options_.runs, store = store_, started = run.started, id = run.lease.run_id] {
        return create_and_start_container(env, *store, *started, id);
      },
      [this, id = run.lease.run_id](Result<docker::ContainerInfo> container) {
        on_container_started(id, std::move(container));
      });
}

void Daemon::on_container_started(const std::string& run_id,
                                  Result<docker::ContainerInfo> container) {
  auto found = runs_.find(run_id);
  if (found == runs_.end()) {
    // Stopped while its container was being started: it must not run on unreported.
    if (container.ok()) {
      on_pool(
          pool_, io_, alive_,
          [env = options_.runs, id = container->id] { return env.docker->remove_container(id); },
          [](Result<void>) {});
    }
    return;
  }
  ActiveRun& run = found->second;
  if (!container.ok()) {
    spdlog::warn("run {}: its container did not start: {}", run_id, container.error().message);
    return conclude(run, {spec::RunStatus::Failed, container.error(), 125});
  }
  watch_container(run, *container);
}

void Daemon::watch_container(ActiveRun& run, const docker::ContainerInfo& container) {
  // Docker's pids are this host's (the daemon runs here), so the container's processes are
  // sampled like a shim's tree. Its start time keeps a reused pid from being taken for it.
  if (container.running && container.pid > 0) {
    if (auto start_time = executors::process_start_time(container.pid))
      run.started->container_root = {container.pid, *start_time};
  }
  auto settings = container_watch_settings(options_.runs, run.started->plan, container);
  run.container_watch = std::make_shared<ContainerWatch>(
      io_.get_executor(),
      [this](std::function<void()> work) { asio::post(pool_, std::move(work)); },
      options_.runs.docker, container.id, settings);
  run.container_watch->start([this, id = run.lease.run_id](const executors::ExitRecord& exit) {
    on_container_exit(id, exit);
  });
  // A cancel that came while the container was being started, or before a restart.
  if (run.lifecycle.cancel_requested()) run.container_watch->stop(executors::ExitReason::Canceled);
}

void Daemon::resume_container(ActiveRun& run) {
  const std::string& id = run.lease.run_id;
  if (!run.started->container) return on_container_exit(id, std::nullopt);
  spdlog::info("run {}: container {} found again ({})", id, run.started->container->id,
               run.started->container->state);
  if (run.started->container->state != "created")
    return watch_container(run, *run.started->container);
  on_pool(
      pool_, io_, alive_,
      [env = options_.runs, container = run.started->container->id] {
        return start_found_container(env, container);
      },
      [this, id](Result<docker::ContainerInfo> started) {
        on_container_started(id, std::move(started));
      });
}

// Docker could not say whether the run's container exists: asking again later is the only way
// never to start a second one.
void Daemon::resume_later(const HeldRunRecord& record, const Error& why) {
  spdlog::warn("run {}: cannot look for its container yet: {}", record.lease.run_id, why.message);
  auto timer = std::make_shared<asio::steady_timer>(io_, kResumeRetry);
  timer->async_wait([this, timer, record](const boost::system::error_code& ec) {
    if (ec || stopped_ || !runs_.count(record.lease.run_id)) return;
    resume_run(record);
  });
}

// As for a process whose shim ended: Finalizing, then the outcome from exit.json (written here
// from the container's exit, unless a restart found it written already).
void Daemon::on_container_exit(const std::string& run_id,
                               std::optional<executors::ExitRecord> exit) {
  auto found = runs_.find(run_id);
  if (found == runs_.end()) return;
  ActiveRun& run = found->second;
  run.container_watch.reset();
  run.stop_timer.reset();
  apply(run, run.lifecycle.process_ended(std::chrono::steady_clock::now()));
  on_pool(
      pool_, io_, alive_,
      [env = options_.runs, started = run.started, run_id, exit] {
        release_run_container(env, started->plan, run_id, exit);
        return finalize_run(env, started->plan);
      },
      [this, run_id](RunOutcome outcome) {
        auto again = runs_.find(run_id);
        if (again != runs_.end()) conclude(again->second, outcome);
      });
}

// Without a watch the container is still being created or started; the watch, once made, sees
// the cancel request.
void Daemon::cancel_container(ActiveRun& run) {
  if (run.container_watch) run.container_watch->stop(executors::ExitReason::Canceled);
}

// The lease moved on: the container is removed (which kills it) and nothing more is reported.
void Daemon::discard_container(ActiveRun& run) {
  if (run.container_watch) run.container_watch->abandon();
  run.container_watch.reset();
  on_pool(
      pool_, io_, alive_,
      [env = options_.runs, started = run.started, run_id = run.lease.run_id] {
        release_run_container(env, started->plan, run_id, std::nullopt);
        return true;
      },
      [this, run_id = run.lease.run_id](bool) {
        auto retiring = retiring_.find(run_id);
        if (retiring != retiring_.end()) retiring->second.container_release_pending = false;
        check_retiring();
      });
}

// Each heartbeat asks Docker whether it answers; a node whose Docker does not is unusable (and
// takes no runs) until it answers again.
void Daemon::probe_docker() {
  if (!options_.runs.docker || docker_probe_in_flight_ || stopped_) return;
  docker_probe_in_flight_ = true;
  on_pool(
      pool_, io_, alive_,
      [docker = options_.runs.docker] { return docker->ping(kDockerProbeLimit); },
      [this](Result<void> answered) {
        docker_probe_in_flight_ = false;
        docker_probed_ = true;
        docker_unusable_ = answered.ok() ? "" : "docker unavailable: " + answered.error().message;
        check_health();
        maybe_lease();
      });
}

bool Daemon::docker_ready() const {
  return !options_.runs.docker || docker_probed_;
}

}  // namespace amlnode::agent
