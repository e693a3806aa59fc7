#pragma once

// What goes into an environment image, decided without touching Docker: the Dockerfile text, the
// files of its build context and the content-addressed tag. Building it is image_builder's job.
//
// The Dockerfile is the base (FROM the custom image or the configured default CPU/GPU image; or,
// for `base_dockerfile`, that Dockerfile's text as written) followed by amlnode's layers, as Azure
// ML's own image build does: `USER root`, the local wheel directory, a conda environment at
// /azureml-envs/amlnode when the job has conda packages, the pip packages installed with
// `python -m pip install` and the configured installer options, then the environment's variables
// as ENV. The tag hashes the Dockerfile and every context file, so anything that changes the image
// (packages, options, the configured default images, the wheels) changes the tag.

#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "spec/job.h"

namespace amlnode::executors {
struct Plan;
}

namespace amlnode::docker {

inline constexpr const char* kDefaultImageRepository = "amlnode/env";
// Where the configured local wheel directory is copied inside the image; installer options name
// it, e.g. {"--no-index", "--find-links", "/amlnode/wheels"}.
inline constexpr const char* kWheelDirInImage = "/amlnode/wheels";
inline constexpr const char* kCondaPrefixInImage = "/azureml-envs/amlnode";
// Every image this library builds carries this label (value "true"); eviction only ever
// considers images that have it.
inline constexpr const char* kManagedLabel = "amlnode.managed";

// Agent configuration for image builds.
struct BuilderConfig {
  // Built images are tagged <image_repository>:<hash>; eviction only touches this repository.
  std::string image_repository = kDefaultImageRepository;
  std::string default_cpu_image = spec::kDefaultCpuImage;
  std::string default_gpu_image = spec::kDefaultGpuImage;
  // The interpreter inside the image that runs pip (when there is no conda layer).
  std::string python = "python";
  // Options before the package list of every pip install, e.g. an index mirror or
  // {"--no-index", "--find-links", "/amlnode/wheels"} for air-gapped sites.
  std::vector<std::string> pip_install_options;
  // Copied into the build context and the image at kWheelDirInImage when the job installs pip
  // packages.
  std::optional<std::filesystem::path> local_wheel_dir;
  // conda, mamba or micromamba, as it is called inside the base image.
  std::string conda_tool = "conda";
  // Where build locks and last-used records live (<state_dir>/images). Empty: no cross-process
  // lock and no usage records (eviction then goes by creation time).
  std::filesystem::path state_dir;
  // The most a build context (Dockerfile, wheels, requirement files) may hold in memory.
  std::size_t max_context_bytes = 256u << 20;
};

// What one environment needs in its image.
struct ImageRequest {
  spec::Environment environment;
  // The resolved base image (the plan's `image`). Empty: the environment's docker.base_image,
  // or when that is empty or one of the SDK's default images, the configured default CPU or GPU
  // image (by `use_gpu`). Ignored when the environment has a base_dockerfile.
  std::string base_image;
  bool use_gpu = false;
  // Polled while a pull or build runs: once true the daemon is made to abandon it (nothing is
  // tagged) and ensure_image fails with the code "Canceled". Unset: it runs to its end.
  std::function<bool()> canceled;
};

ImageRequest image_request_for(const spec::Job& job, const executors::Plan& plan);

struct ContextFile {
  std::string name;  // path inside the build context
  std::string content;
};

struct ImageRecipe {
  std::string tag;  // <repository>:<hash>
  std::string dockerfile;
  std::vector<ContextFile> files;  // besides the Dockerfile
  // The FROM image to have locally before building; empty for a base_dockerfile, whose own FROM
  // lines the daemon resolves.
  std::string base_image;
  // True when there is nothing to add to the base image: then the base image itself is used and
  // no build happens.
  bool base_only = false;
};

Result<ImageRecipe> make_recipe(const ImageRequest& request, const BuilderConfig& config);

// The recipe's build context as an uncompressed tar, made in memory. Fails (ImageBuildFailed)
// when it would exceed `max_bytes`.
Result<std::string> make_context_tar(const ImageRecipe& recipe, std::size_t max_bytes);

}  // namespace amlnode::docker
