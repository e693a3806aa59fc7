#pragma once

// The runtime seam, in the manner of Mesos's containerizer: how the processes of a planned run
// are prepared, started (or found again after an agent restart), watched, stopped, killed and
// released on this node, whatever they run in. Two implementations, chosen by the plan's
// environment:
//
//   host processes   the run's ranks under its one shim (a conda / pip environment, or none)
//   Docker           the run's ranks in one container, supervised by ContainerWatch
//
// `amlnode run` (agent/local_run.cc) and the daemon (agent/daemon/) drive every run through this
// interface and neither branches on the kind of run. The lifecycle (agent/run_lifecycle.h)
// decides when to call what; a runtime only carries it out.
//
// Threads: prepare(), launch() and release() block (an environment build can take minutes, an
// Engine API call seconds) and are called off the loop; watch(), stop(), kill(), abandon(),
// detach(), still_running() and the queries are called on the caller's event loop, whose thread
// calls `on_exit`.

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agent/config.h"
#include "agent/run_steps.h"
#include "common/clock.h"
#include "common/result.h"
#include "docker/runtime.h"
#include "executors/plan.h"
#include "executors/shim/launcher.h"
#include "metrics/run_sampler.h"
#include "spec/job.h"

namespace amlnode::agent {

class RunRuntime {
 public:
  using Progress = std::function<void(std::string_view line)>;
  virtual ~RunRuntime() = default;

  // What the run needs before it starts (an environment built or reused, an image pulled or
  // built), its progress given to `progress` (may be empty). `canceled` is polled meanwhile; once
  // true the preparation stops and fails "Canceled".
  virtual Result<void> prepare(executors::Plan& plan, const spec::Job& job, Progress progress,
                               std::function<bool()> canceled) = 0;
  // Starts the run's processes (RunRuntimeContext::before_launch first).
  virtual Result<void> launch() = 0;
  // What the Running status says the run is running.
  virtual std::string describe() const = 0;
  // What prepare() makes, to label its progress ("environment", "image").
  virtual std::string_view prepares() const = 0;
  // The image the run's container is made from; empty for host processes.
  virtual std::string image() const { return {}; }

  // Watches the started (or found again) run from `loop`; `on_exit` runs on the loop, once, when
  // nothing of the run is left. The deadline is the runtime's own (the shim's, or the container
  // watch's, counted from when the container started).
  virtual void watch(boost::asio::io_context& loop, std::function<void()> on_exit) = 0;
  // Asks the run to stop: SIGTERM, the grace period, SIGKILL.
  virtual void stop() = 0;
  // Ends every process of the run now (a stop that was not carried out in time).
  virtual void kill() = 0;
  // After on_exit: how the run ended, and everything the runtime held for it released.
  virtual Result<executors::ExitRecord> release() = 0;

  // The lease moved on: the run's processes are stopped and nothing more of them is reported
  // (`on_exit` is never called). still_running() says when nothing of the run is left.
  virtual void abandon() = 0;
  virtual bool still_running() = 0;
  // The agent is stopping: the watch ends without `on_exit` and the run goes on, to be found
  // again at the next start.
  virtual void detach() = 0;

  // The process the run's resources are sampled from while it is watched (metrics).
  virtual std::optional<metrics::RunRoot> sampled_root() const = 0;
  // The shim that supervises the run on this host, which the state store keeps so that a restart
  // finds it again; none for a container (found by its id or label instead).
  virtual std::optional<executors::LaunchedShim> shim() const { return std::nullopt; }
};

// How a runtime reaches what it needs, and what its caller wants to hear of.
struct RunRuntimeContext {
  NodeConfig config;
  std::filesystem::path state_dir;
  std::shared_ptr<Clock> clock;
  executors::ProcessLauncher* launcher = nullptr;  // host processes
  // Called on the launching thread right before the run's processes start. The daemon records
  // durably there that the run is being launched, and refuses a run canceled meanwhile.
  std::function<Result<void>()> before_launch;
  // A Docker run's container was created (it has not started yet): the daemon stores its id.
  std::function<void(const std::string& container_id)> on_container_created;
  // Docker runs: one client shared by every run (the daemon), or, when unset, one made from the
  // config for the run. `docker_refused` fails every Docker run (a node that runs none).
  std::shared_ptr<docker::ContainerRuntime> docker;
  std::optional<docker::DockerRuntimeConfig> docker_config;
  std::optional<Error> docker_refused;
  // Where blocking Engine API calls run while a container is watched; unset: the runtime's own
  // two threads.
  std::function<void(std::function<void()>)> blocking;
  // Whether a Docker daemon that cannot be reached is waited for (the agent, whose runs outlive a
  // dockerd restart) rather than ending the run as lost (`amlnode run`, whose user is waiting).
  bool wait_out_docker_outages = false;
};

// The runtime for `plan`: Docker when its environment is, host processes otherwise.
std::unique_ptr<RunRuntime> make_run_runtime(const executors::Plan& plan,
                                             RunRuntimeContext context);

// What an agent restart found of a run that had started: its shim (host processes), or its
// container (Docker; none when it had ended and been released, exit.json then saying how it
// ended).
struct FoundRun {
  std::optional<executors::LaunchedShim> shim;
  bool shim_alive = false;
  std::optional<docker::ContainerInfo> container;
  // The environment cache's lease, taken again for a run still going.
  std::optional<executors::environments::PreparedEnvironment> environment;
};

// The runtime of a run found again: watch() picks up where the earlier agent left off (a
// container found "created" is started first; a run that had ended reports so at once).
std::unique_ptr<RunRuntime> recover_run_runtime(const executors::Plan& plan,
                                                RunRuntimeContext context, FoundRun found);

}  // namespace amlnode::agent
