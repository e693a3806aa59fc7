#include "docker/image_builder.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "common/error_codes.h"
#include "docker/registry.h"

namespace amlnode::docker {
namespace {

using Credentials = std::optional<spec::RegistryDetails>;

// An error from a pull or build step: the daemon being away stays DockerUnavailable and a
// canceled step stays Canceled; anything else becomes `code` with the daemon's message. Passwords
// are scrubbed from every message.
Error step_error(const Error& error, const char* code, const std::string& doing,
                 const Credentials& credentials) {
  if (error.code == errors::kCanceled)
    return Error{error.code, redact(doing + " was canceled", credentials)};
  if (error.code == kDockerUnavailable) {
    return Error{error.code, redact(error.message, credentials)};
  }
  return Error{code, redact(doing + " failed: " + error.message, credentials)};
}

// Runs a streamed call whose body is the daemon's JSON progress messages, relaying them to
// `work.progress`; a stream that reports an error fails with that error.
Result<std::optional<std::string>> relay_stream(EngineClient& client, Request request,
                                                const ImageWork& work,
                                                const Credentials& credentials) {
  ProgressRelay relay(work.progress, [&](std::string text) { return redact(text, credentials); });
  JsonLineReader reader([&](const nlohmann::json& message) { relay.handle(message); });
  request.canceled = work.canceled;
  auto streamed = client.stream(request, [&](std::string_view piece) { reader.feed(piece); });
  reader.finish();
  if (!streamed) return streamed.error();
  if (relay.error()) return Error{kDockerError, *relay.error()};
  return relay.image_id();
}

std::string escaped_filter(const std::string& key, const std::string& value) {
  return query_escape(nlohmann::json({{key, {value}}}).dump());
}

SystemTime created_time(const nlohmann::json& image) {
  return std::chrono::system_clock::from_time_t(
      static_cast<std::time_t>(image.value("Created", 0)));
}

}  // namespace

ImageBuilder::ImageBuilder(EngineClient& client, BuilderConfig config)
    : client_(client),
      config_(std::move(config)),
      usage_(config_.state_dir.empty() ? std::filesystem::path() : config_.state_dir / "images") {}

Result<bool> ImageBuilder::exists(const std::string& image) {
  auto response = client_.call(Request::get("/images/" + path_escape(image) + "/json"));
  if (!response) return response.error();
  if (response->status == 404) return false;
  if (!response->success()) return daemon_error(*response, "inspecting image " + image);
  return true;
}

Result<EnsuredImage> ImageBuilder::ensure(const ImageRequest& request,
                                          const ProgressSink& progress) {
  const ImageWork work{progress, request.canceled};
  auto recipe = make_recipe(request, config_);
  if (!recipe) return recipe.error();
  const auto& credentials = request.environment.docker.base_image_registry;
  if (recipe->base_only) {
    auto source = ensure_base(recipe->base_image, credentials, work);
    if (!source) return source.error();
    return EnsuredImage{recipe->base_image, *source};
  }
  auto present = exists(recipe->tag);
  if (!present) return present.error();
  if (*present) {
    usage_.record(recipe->tag);
    return EnsuredImage{recipe->tag, ImageSource::CacheHit};
  }
  auto lock = usage_.lock(recipe->tag);
  if (!lock) return lock.error();
  return build_once(*recipe, credentials, work);
}

Result<EnsuredImage> ImageBuilder::build_once(const ImageRecipe& recipe,
                                              const Credentials& credentials,
                                              const ImageWork& work) {
  // Another thread or process may have built it while this one waited for the lock.
  auto present = exists(recipe.tag);
  if (!present) return present.error();
  if (!*present) {
    if (!recipe.base_image.empty()) {
      auto base = ensure_base(recipe.base_image, credentials, work);
      if (!base) return base.error();
    }
    if (auto built = build(recipe, credentials, work); !built) return built.error();
  }
  usage_.record(recipe.tag);
  return EnsuredImage{recipe.tag, *present ? ImageSource::CacheHit : ImageSource::Built};
}

Result<ImageSource> ImageBuilder::ensure_base(const std::string& image,
                                              const Credentials& credentials,
                                              const ImageWork& work) {
  auto present = exists(image);
  if (!present)
    return step_error(present.error(), kImagePullFailed, "checking " + image, credentials);
  if (*present) return ImageSource::Present;
  if (auto pulled = pull(image, credentials, work); !pulled) return pulled.error();
  return ImageSource::Pulled;
}

Result<void> ImageBuilder::pull(const std::string& image, const Credentials& credentials,
                                const ImageWork& work) {
  auto reference = parse_image_reference(image);
  auto request = Request::post("/images/create?fromImage=" + query_escape(reference.name) +
                               "&tag=" + query_escape(reference.version()));
  if (credentials) {
    request.with_header("X-Registry-Auth", registry_auth_header(*credentials, reference));
  }
  if (work.progress) work.progress("Pulling " + reference.canonical() + "\n");
  auto pulled = relay_stream(client_, std::move(request), work, credentials);
  if (!pulled) return step_error(pulled.error(), kImagePullFailed, "pulling " + image, credentials);
  return ok();
}

Result<void> ImageBuilder::build(const ImageRecipe& recipe, const Credentials& credentials,
                                 const ImageWork& work) {
  auto context = make_context_tar(recipe, config_.max_context_bytes);
  if (!context) return context.error();
  nlohmann::json labels = {{kManagedLabel, "true"}};
  auto request = Request::post("/build?t=" + query_escape(recipe.tag) +
                                   "&labels=" + query_escape(labels.dump()) + "&rm=1&forcerm=1",
                               std::move(*context));
  request.content_type = "application/x-tar";
  // A base_dockerfile's FROM lines are pulled by the daemon during the build, with these.
  if (credentials && !credentials->address.empty()) {
    request.headers.emplace_back("X-Registry-Config", registry_config_header(*credentials));
  }
  if (work.progress) work.progress("Building " + recipe.tag + "\n");
  auto built = relay_stream(client_, std::move(request), work, credentials);
  if (!built) {
    return step_error(built.error(), kImageBuildFailed, "building " + recipe.tag, credentials);
  }
  return ok();
}

Result<std::vector<ManagedImage>> ImageBuilder::list_managed() {
  auto images = client_.call(Request::get(
      "/images/json?filters=" + escaped_filter("label", std::string(kManagedLabel) + "=true")));
  if (!images) return images.error();
  if (!images->success()) return daemon_error(*images, "listing images");
  auto containers = client_.call(Request::get("/containers/json?all=1"));
  if (!containers) return containers.error();
  if (!containers->success()) return daemon_error(*containers, "listing containers");
  std::vector<ManagedImage> managed;
  try {
    std::set<std::string> in_use;
    for (const auto& container : nlohmann::json::parse(containers->body)) {
      in_use.insert(container.value("ImageID", ""));
    }
    std::string prefix = config_.image_repository + ":";
    for (const auto& image : nlohmann::json::parse(images->body)) {
      ManagedImage entry;
      entry.id = image.value("Id", "");
      entry.size_bytes = image.value("Size", std::uint64_t{0});
      entry.last_used = created_time(image);
      // The last recorded use of any of its tags; an image never recorded counts from its
      // creation.
      bool recorded = false;
      auto tags = image.value("RepoTags", nlohmann::json::array());
      for (const auto& tag : tags.is_array() ? tags : nlohmann::json::array()) {
        auto name = tag.get<std::string>();
        if (!name.starts_with(prefix)) continue;
        entry.tags.push_back(name);
        if (auto used = usage_.last_used(name); used && (!recorded || *used > entry.last_used)) {
          entry.last_used = *used;
          recorded = true;
        }
      }
      if (entry.tags.empty()) continue;
      entry.in_use = in_use.contains(entry.id);
      managed.push_back(std::move(entry));
    }
  } catch (const nlohmann::json::exception& e) {
    return Error{kDockerError, std::string("unexpected image list from the daemon: ") + e.what()};
  }
  std::sort(managed.begin(), managed.end(),
            [](const auto& a, const auto& b) { return a.last_used < b.last_used; });
  return managed;
}

Result<PruneReport> ImageBuilder::prune(std::uint64_t budget_bytes) {
  auto images = list_managed();
  if (!images) return images.error();
  PruneReport report;
  for (const auto& image : *images) report.bytes_before += image.size_bytes;
  report.bytes_after = report.bytes_before;
  for (auto& victim : choose_evictions(*images, budget_bytes)) {
    bool removed = true;
    for (const auto& tag : victim.tags) {
      auto response = client_.call(Request::del("/images/" + path_escape(tag)));
      if (!response) return response.error();
      // 409: a container started using it since the listing; it stays.
      if (!response->success() && response->status != 404) removed = false;
    }
    if (!removed) continue;
    report.bytes_after -= victim.size_bytes;
    report.removed.push_back(std::move(victim));
  }
  return report;
}

std::vector<ManagedImage> choose_evictions(std::vector<ManagedImage> images,
                                           std::uint64_t budget_bytes) {
  std::stable_sort(images.begin(), images.end(),
                   [](const auto& a, const auto& b) { return a.last_used < b.last_used; });
  std::uint64_t total = 0;
  for (const auto& image : images) total += image.size_bytes;
  std::vector<ManagedImage> victims;
  for (auto& image : images) {
    if (total <= budget_bytes) break;
    if (image.in_use) continue;
    total -= image.size_bytes;
    victims.push_back(std::move(image));
  }
  return victims;
}

}  // namespace amlnode::docker
