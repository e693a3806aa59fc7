#pragma once

// Environment images through the Engine API: reuse by tag, base image pulls with registry
// credentials, builds from an in-memory tar context, and least-recently-used eviction of the
// images it built. The Docker runtime delegates its image calls here.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "docker/engine_client.h"
#include "docker/image_recipe.h"
#include "docker/image_usage.h"
#include "docker/progress.h"
#include "docker/runtime.h"

namespace amlnode::docker {

// Where a pull or a build reports, and what may stop it (ImageRequest::canceled).
struct ImageWork {
  ProgressSink progress;
  std::function<bool()> canceled;
};

class ImageBuilder {
 public:
  ImageBuilder(EngineClient& client, BuilderConfig config);

  Result<EnsuredImage> ensure(const ImageRequest& request, const ProgressSink& progress);
  Result<std::vector<ManagedImage>> list_managed();
  Result<PruneReport> prune(std::uint64_t budget_bytes);

  // Whether the daemon has `image` (GET /images/{name}/json).
  Result<bool> exists(const std::string& image);

 private:
  Result<ImageSource> ensure_base(const std::string& image,
                                  const std::optional<spec::RegistryDetails>& credentials,
                                  const ImageWork& work);
  Result<void> pull(const std::string& image,
                    const std::optional<spec::RegistryDetails>& credentials, const ImageWork& work);
  Result<void> build(const ImageRecipe& recipe,
                     const std::optional<spec::RegistryDetails>& credentials,
                     const ImageWork& work);
  Result<EnsuredImage> build_once(const ImageRecipe& recipe,
                                  const std::optional<spec::RegistryDetails>& credentials,
                                  const ImageWork& work);

  EngineClient& client_;
  BuilderConfig config_;
  ImageUsage usage_;
};

// The images to remove, least recently used first, skipping images in use, until the total size
// of what remains is within `budget_bytes`.
std::vector<ManagedImage> choose_evictions(std::vector<ManagedImage> images,
                                           std::uint64_t budget_bytes);

}  // namespace amlnode::docker
