#pragma once

// What a run's container looks like, decided without touching Docker: the image, the command
// wrapped so that it writes the run's log itself, the plan's environment (and nothing of the
// host's), the run folder and the inputs mounted at their own paths, shm size, GPUs, labels,
// networking, and the job's `docker run` arguments mapped onto the Engine API's fields.

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "spec/job.h"

namespace amlnode::executors {
struct Plan;
}

namespace amlnode::docker {

inline constexpr const char* kRunIdLabel = "amlnode.run_id";
// The GPU request `docker run --gpus all` makes.
inline constexpr const char* kGpuDriver = "nvidia";

// What this node has, as the agent found it.
struct NodeFacts {
  int gpu_count = 0;
};

struct ContainerOptions {
  NodeFacts node;
  // Run as this user ("uid[:gid]" or a name known in the image). Empty: the image's user.
  std::optional<std::string> user;
  // docker-init as PID 1 (`docker run --init`), so the run's process gets SIGTERM's default
  // action like any process instead of the special treatment PID 1 gets.
  bool init = true;
  // The configured default GPU image: running it counts as wanting GPUs.
  std::string default_gpu_image = spec::kDefaultGpuImage;
  // amlnode-shim on this host (statically linked): a run of several ranks runs it inside its
  // container, mounted read-only at the same path, to start and supervise the ranks.
  std::filesystem::path shim_binary;
};

struct ContainerSpec {
  std::string name;  // the container's name; empty lets Docker choose
  std::string image;
  std::vector<std::string> argv;  // the run's command, before wrapping
  std::filesystem::path std_log;  // where the container's stdout and stderr are appended
  spec::EnvVars env;              // the container's whole environment (over the image's ENV)
  std::filesystem::path working_dir;
  // The host folder of the amlnode_run module, mounted read-only at the same path and put last on
  // the PYTHONPATH the container starts with (the image's own, or the job's, comes first).
  std::optional<std::filesystem::path> python_module_dir;
  std::optional<std::string> user;
  std::map<std::string, std::string> labels;
  nlohmann::json host_config = nlohmann::json::object();  // the Engine API's HostConfig
  // A run of several ranks: the launch spec (executors/shim/protocol.h) the shim inside the
  // container reads, to be written to `launch_file` before the container is created. The shim's
  // own messages go to `std_log` (system_logs/shim.txt), each rank's output to its own log.
  std::optional<std::string> launch_spec;
  std::filesystem::path launch_file;
};

// Whether the job needs GPUs: use_gpu, a framework set-up that only runs on GPUs (NCCL), or a GPU
// base image (the configured default GPU image, or a name containing "cuda" or "gpu").
bool job_wants_gpu(const spec::Job& job, const std::string& image,
                   const std::string& default_gpu_image);

// The container for `plan` running `image`. Fails with UnsupportedDockerArgument naming an
// argument it cannot map, and with GpuNotAvailable when the job needs GPUs the node lacks.
Result<ContainerSpec> container_spec_for(const executors::Plan& plan, const spec::Job& job,
                                         const std::string& image, const ContainerOptions& options);

// Applies `docker run` arguments to the spec. Supported: --shm-size, --ipc, --network/--net,
// --cap-add, --cap-drop, --privileged, --ulimit, -e/--env, -v/--volume, --device, -m/--memory,
// --cpus, --gpus, -u/--user, --security-opt, --init; as "--flag value", "--flag=value" or, for
// the one-letter forms, "-fvalue". Anything else fails (UnsupportedDockerArgument) naming it.
Result<void> apply_docker_arguments(const std::vector<std::string>& arguments, ContainerSpec& spec);

// "2g", "512m", "1.5GB", "1024": bytes (binary multiples, as Docker reads sizes).
std::optional<std::uint64_t> parse_byte_size(std::string_view text);

// The command the container runs: /bin/sh appends the command's stdout and stderr to `std_log`
// and then becomes the command (exec), so the file keeps growing with nobody copying a stream,
// even when amlnode itself is gone. Every Azure ML base image has /bin/sh. With a
// `python_module_dir`, the shell first appends it to PYTHONPATH: only the shell sees the image's
// own value, which the container's Env would otherwise replace.
std::vector<std::string> logging_entrypoint(
    const std::filesystem::path& std_log,
    const std::optional<std::filesystem::path>& python_module_dir = std::nullopt);

// The body of POST /containers/create.
nlohmann::json create_request_body(const ContainerSpec& spec);

}  // namespace amlnode::docker
