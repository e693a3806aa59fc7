#pragma once

// The runtime seam, in the manner of Mesos's containerizer: how the processes of a planned run
// are prepared, started, watched, stopped, killed and released on this node, whatever they run
// in. Two implementations, chosen by the plan's environment:
//
//   host processes   the run's ranks under its one shim (a conda / pip environment, or none)
//   Docker           the run in a container, supervised by ContainerWatch
//
// `amlnode run` (agent/local_run.cc) drives every run through this interface and does not
// branch on the kind of run. The daemon keeps its own two paths for now (docs/architecture.md,
// "Where the structure is going"). The lifecycle (agent/run_lifecycle.h) decides when to call
// what; a runtime only carries it out.
//
// Threads: prepare() and launch() block (an environment build can take minutes); watch(), stop()
// and kill() are called on the caller's event loop, whose thread calls `on_exit`.

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "agent/config.h"
#include "agent/run_steps.h"
#include "common/clock.h"
#include "common/result.h"
#include "executors/plan.h"
#include "executors/shim/launcher.h"
#include "spec/job.h"

namespace amlnode::agent {

class RunRuntime {
 public:
  using Progress = std::function<void(std::string_view line)>;
  virtual ~RunRuntime() = default;

  // What the run needs before it starts (an environment built or reused, an image pulled or
  // built), its progress given to `progress`. `canceled` is polled meanwhile; once true the
  // preparation stops and fails "Canceled".
  virtual Result<void> prepare(executors::Plan& plan, const spec::Job& job, Progress progress,
                               std::function<bool()> canceled) = 0;
  // Starts the run's processes.
  virtual Result<void> launch(const executors::Plan& plan) = 0;
  // What the Running status says the run is running.
  virtual std::string describe(const executors::Plan& plan) const = 0;
  // What prepare() makes, to label its progress ("environment", "image").
  virtual std::string_view prepares() const = 0;
  // The image the run's container is made from; empty for host processes.
  virtual std::string image() const { return {}; }
  // Watches the started run from `loop`; `on_exit` runs on the loop, once, when nothing of the
  // run is left. The deadline is the runtime's own (the shim's, or the container watch's).
  virtual void watch(boost::asio::io_context& loop, std::function<void()> on_exit) = 0;
  // Asks the run to stop: SIGTERM, the grace period, SIGKILL.
  virtual void stop() = 0;
  // Ends every process of the run now (a stop that was not carried out in time).
  virtual void kill() = 0;
  // After on_exit: how the run ended, and everything the runtime held for it released.
  virtual Result<executors::ExitRecord> release() = 0;
};

struct RunRuntimeContext {
  NodeConfig config;
  std::filesystem::path state_dir;
  std::shared_ptr<Clock> clock;
  executors::ProcessLauncher* launcher = nullptr;  // host processes
  const SystemLog* log = nullptr;
};

// The runtime for `plan`: Docker when its environment is, host processes otherwise.
std::unique_ptr<RunRuntime> make_run_runtime(const executors::Plan& plan,
                                             RunRuntimeContext context);

}  // namespace amlnode::agent
