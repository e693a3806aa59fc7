// The Daemon and Docker: the health probe that keeps a node whose Docker does not answer from
// taking runs, and looking again for a held run's container once Docker answers. Docker runs
// themselves go through the container runtime (agent/run_runtime.h) as every run does.

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include "agent/daemon/daemon.h"

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
