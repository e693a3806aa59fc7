#pragma once

// The seam between the agent and Docker: what the agent needs from a container runtime, as a
// small interface, and the factory for the real one (the Engine API over the Unix socket).
//
// Error codes: DockerUnavailable (no daemon at the socket, or it stopped answering),
// ImagePullFailed and ImageBuildFailed (with the daemon's message), GpuNotAvailable and
// UnsupportedDockerArgument (from container_spec_for), DockerError (any other refusal, with the
// daemon's message). Registry passwords appear in no message and no progress text.
//
// Every method may be called from any thread; calls do not share connections, so one thread can
// block in wait_container while another stops the same container.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "docker/container_spec.h"
#include "docker/engine_client.h"
#include "docker/image_recipe.h"
#include "docker/image_usage.h"
#include "docker/progress.h"

namespace amlnode::docker {

inline constexpr const char* kImageBuildFailed = "ImageBuildFailed";
inline constexpr const char* kImagePullFailed = "ImagePullFailed";

enum class ImageSource {
  CacheHit,  // the environment's image was already built
  Built,     // built now
  Present,   // the environment needs no build and its base image was already here
  Pulled,    // the environment needs no build and its base image was pulled now
};
std::string to_string(ImageSource source);

struct EnsuredImage {
  std::string image;  // what to create the container from (amlnode/env:<hash> or the base image)
  ImageSource source = ImageSource::CacheHit;
};

struct ContainerExit {
  int exit_code = -1;
  bool oom_killed = false;
};

struct ContainerInfo {
  std::string id;
  std::string name;
  std::string image;
  std::string state;  // created, running, exited, ...
  bool running = false;
  pid_t pid = 0;  // its first process on this host while it runs (docker-init), else 0
  int exit_code = 0;
  bool oom_killed = false;
  std::map<std::string, std::string> labels;
  // When it last started and ended (inspect only; unset before it ever did).
  std::optional<SystemTime> started_at;
  std::optional<SystemTime> finished_at;
};

struct ManagedImage {
  std::string id;
  std::vector<std::string> tags;  // this builder's repository's tags of the image
  std::uint64_t size_bytes = 0;
  SystemTime last_used;  // the usage record, else the image's creation time
  bool in_use = false;   // a container (in any state) was made from it
};

struct PruneReport {
  std::vector<ManagedImage> removed;
  std::uint64_t bytes_before = 0;
  std::uint64_t bytes_after = 0;
};

class ContainerRuntime {
 public:
  virtual ~ContainerRuntime() = default;

  // The negotiated Engine API version (asked once, then kept).
  virtual Result<std::string> api_version() = 0;
  // Whether the daemon answers now (GET /_ping, at most `limit`): the health check.
  virtual Result<void> ping(std::chrono::milliseconds limit) = 0;

  // The image for an environment: reused when its tag exists, else built once (concurrent
  // callers for the same environment wait for one build), pulling the base image first with the
  // environment's registry credentials when it is not present. Progress goes to `progress`.
  virtual Result<EnsuredImage> ensure_image(const ImageRequest& request,
                                            const ProgressSink& progress) = 0;

  virtual Result<std::string> create_container(const ContainerSpec& spec) = 0;
  virtual Result<void> start_container(const std::string& id) = 0;
  // Blocks until the container is not running; then its exit code and whether the kernel's OOM
  // killer ended it.
  virtual Result<ContainerExit> wait_container(const std::string& id) = 0;
  // The same, waiting at most `limit`: nullopt when the container is still running then. A
  // supervisor that must stay responsive (or be able to stop) waits in such slices.
  virtual Result<std::optional<ContainerExit>> wait_container_for(
      const std::string& id, std::chrono::milliseconds limit) = 0;
  // SIGTERM, then SIGKILL after `grace` (docker stop).
  virtual Result<void> stop_container(const std::string& id, std::chrono::seconds grace) = 0;
  virtual Result<void> kill_container(const std::string& id, const std::string& signal) = 0;
  // Removes the container and the anonymous volumes it created, running or not.
  virtual Result<void> remove_container(const std::string& id) = 0;
  // All containers (any state) with the label, e.g. "amlnode.run_id=<id>" or "amlnode.managed".
  virtual Result<std::vector<ContainerInfo>> list_containers(const std::string& label) = 0;
  virtual Result<ContainerInfo> inspect_container(const std::string& id) = 0;
  // What the container wrote to its own stdout/stderr (only the wrapper's complaints, since the
  // run's output goes to std_log), at most `max_bytes` from the end.
  virtual Result<std::string> container_output(const std::string& id, std::size_t max_bytes) = 0;

  // Images this builder made (label amlnode.managed=true, in its repository), oldest use first.
  virtual Result<std::vector<ManagedImage>> list_managed_images() = 0;
  // Removes least-recently-used managed images, never one a container uses, until their total
  // size is within `budget_bytes` (or nothing removable is left).
  virtual Result<PruneReport> prune_images(std::uint64_t budget_bytes) = 0;
};

struct DockerRuntimeConfig {
  EngineConfig engine;
  BuilderConfig builder;
};

// The Engine API implementation. Fails only for a docker host it cannot use (not unix://); it
// does not contact the daemon until the first call.
Result<std::unique_ptr<ContainerRuntime>> make_docker_runtime(const DockerRuntimeConfig& config);

struct ContainerOutcome {
  std::string container_id;
  int exit_code = -1;
  bool oom_killed = false;
  // The container's own stdout/stderr (see container_output), for system logs when non-empty.
  std::string runtime_output;
  // Set when removing the finished container failed; the run's result stands regardless.
  std::string cleanup_error;
};

// Creates, starts, waits for and removes the container (also when starting or waiting fails).
// `on_started` gets the id once it runs, so the caller can stop it from another thread when the
// deadline passes or the run is canceled.
Result<ContainerOutcome> run_container(
    ContainerRuntime& runtime, const ContainerSpec& spec,
    const std::function<void(const std::string& id)>& on_started = {});

}  // namespace amlnode::docker
