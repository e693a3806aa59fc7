#pragma once

// Supervising a Docker run's container (ContainerWatch: its deadline, a stop with SIGTERM, the
// grace period and SIGKILL, its exit record), preparing it (the image and the spec) and removing
// it, for the container runtime (agent/run_runtime.cc) that `amlnode run` and the daemon drive. The
// outcome is the same ExitRecord the shim writes for a process, so both kinds of run finish the
// same way.
//
// The container writes its own output into the run's std_log.txt (docker/container_spec.h), so
// nothing here copies output and the log keeps growing even if this process dies; the container
// then runs on (found again by its amlnode.run_id label) and is not stopped at its deadline.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "agent/config.h"
#include "agent/run_steps.h"
#include "common/clock.h"
#include "common/result.h"
#include "docker/container_spec.h"
#include "docker/runtime.h"
#include "executors/shim/protocol.h"

namespace amlnode::agent {

// Supervises one started container from an event loop the caller runs: the deadline, stopping it
// (docker stop with the grace period, a kill should that call fail), and its exit record once it
// no longer runs. The Engine API calls block, so each goes to `blocking` (a pool) and posts its
// result back to the loop; the wait is made in slices of `wait_slice`, so no call holds a thread
// for longer than that and the pool can always be joined. `amlnode run` and the daemon both
// supervise containers with it. Every member is called on the loop only.
class ContainerWatch : public std::enable_shared_from_this<ContainerWatch> {
 public:
  using Blocking = std::function<void(std::function<void()>)>;
  using Done = std::function<void(const executors::ExitRecord&)>;
  struct Settings {
    std::chrono::seconds grace{10};
    // Time left before the run's deadline, counted from start(); zero or less stops it at once.
    std::optional<std::chrono::milliseconds> deadline;
    std::chrono::milliseconds wait_slice{2000};
    // When the Docker daemon cannot be reached while waiting: keep trying every
    // `unreachable_retry` (the agent, whose runs outlive a dockerd restart) or end the run as lost
    // (`amlnode run`, whose user is waiting).
    bool retry_when_unreachable = false;
    std::chrono::milliseconds unreachable_retry{1000};
    long long started_at_ms = 0;  // for the exit record; zero: now
  };

  ContainerWatch(boost::asio::any_io_executor loop, Blocking blocking,
                 std::shared_ptr<docker::ContainerRuntime> runtime, std::string id,
                 Settings settings);

  // Starts the deadline and the wait; `done` runs on the loop once, when the container has ended.
  void start(Done done);
  // Deadline or cancel: stops the container; the exit record then carries `reason`. Only the
  // first call counts.
  void stop(executors::ExitReason reason);
  // The caller no longer cares (the agent stopping, the run moved away): no more calls are made
  // and `done` is never called. The container is left as it is.
  void abandon();

  const std::string& container_id() const { return id_; }
  bool stopping() const { return stopping_; }

 private:
  void wait_slice();
  void on_waited(const Result<std::optional<docker::ContainerExit>>& waited);
  void send_stop();
  void on_stop_sent(bool stopped);
  void finish(const docker::ContainerExit& exit);
  void finish_lost(const Error& error);
  template <class Work, class Then>
  void off_loop(Work work, Then then);

  boost::asio::any_io_executor loop_;
  Blocking blocking_;
  std::shared_ptr<docker::ContainerRuntime> runtime_;
  std::string id_;
  Settings settings_;
  boost::asio::steady_timer deadline_timer_;
  boost::asio::steady_timer retry_timer_;
  Done done_;
  bool stopping_ = false;
  bool finished_ = false;
  executors::ExitRecord record_;
};

// The part of a Docker run's preparation that `amlnode run` and the daemon share: the image
// (reused, pulled or built, its progress appended to system_logs/image_build.txt and given to
// `progress`), eviction of old images over docker.disk_budget_bytes after a build, and the
// container's spec. Noted in the run's system log. `canceled` is polled while an image is pulled
// or built; once true the daemon abandons it and this fails "Canceled".
Result<docker::ContainerSpec> prepare_run_container(docker::ContainerRuntime& runtime,
                                                    const docker::DockerRuntimeConfig& docker,
                                                    const NodeConfig& config,
                                                    const executors::Plan& plan,
                                                    const spec::Job& job, const SystemLog& log,
                                                    std::function<void(std::string_view)> progress,
                                                    std::function<bool()> canceled);

// A run of several ranks: writes the launch spec the shim inside its container reads
// (ContainerSpec::launch_spec). Nothing to do for a run of one process.
Result<void> write_container_launch(const docker::ContainerSpec& spec);

// How a container run ended: the container's own exit record, or, for a run of several ranks,
// the record the shim inside wrote (each rank's end, the failed rank), under the reason a
// deadline or cancel gave the container. The shim's record is read beneath the run folder
// (the job can write there) and bounded.
executors::ExitRecord container_exit_record(const executors::Plan& plan,
                                            const executors::ExitRecord& watched);

// The label every container of a run carries ("amlnode.run_id=<key>", the plan's container_key:
// the run id, with ".node_NN" for a share of a run across nodes), which finds them again after
// an agent restart.
std::string run_container_label(const std::string& container_key);

// How a run's container is supervised: the grace period, and the deadline left, counted from when
// the container started (so an agent restart does not extend it). A container found ended whose
// run had used up its deadline ended by the deadline.
ContainerWatch::Settings container_watch_settings(const executors::Plan& plan,
                                                  const docker::ContainerInfo& container,
                                                  const Clock& clock, bool retry_when_unreachable);

// Every container of the run (found by its label) removed, which kills one still running; the
// output a container wrote of its own (the wrapper's complaints: the run's output goes to
// std_log.txt) kept in system_logs/container.txt, bounded. Noted in the run's system log.
void remove_run_containers(docker::ContainerRuntime& runtime, const executors::Plan& plan,
                           const SystemLog& log);

// The Docker settings of the node config (`docker:` and `images:` sections):
//   docker: {host: unix:///var/run/docker.sock, image_repository: amlnode/env,
//            pip_install_options: [--no-index, --find-links, /amlnode/wheels],
//            local_wheel_dir: /srv/wheels, conda_tool: conda, python: python, gpus: 0}
Result<docker::DockerRuntimeConfig> docker_runtime_config(const NodeConfig& config,
                                                          const std::filesystem::path& state_dir);

// docker.disk_budget_bytes: after a build, least-recently-used images are evicted down to it.
std::optional<std::uint64_t> docker_disk_budget(const NodeConfig& config);

// Whether the daemon runs Docker jobs and watches dockerd: `docker.enabled` when given, else
// whether the config's `docker:` section has anything in it. "InvalidConfig" for a non-boolean
// value.
Result<bool> docker_enabled(const NodeConfig& config);

// GPUs this node can give containers: the config's docker.gpus, else the /dev/nvidiaN devices.
int node_gpu_count(const NodeConfig& config);

}  // namespace amlnode::agent
