// The ContainerRuntime over the Docker Engine API.

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>

#include "docker/engine_client.h"
#include "docker/image_builder.h"
#include "docker/runtime.h"

namespace amlnode::docker {
namespace {

// How much of a container's own stdout/stderr run_container keeps for the system logs.
constexpr std::size_t kRuntimeOutputLimit = 64u << 10;
// container_output asks for no more than this many lines, so that a container that did write a
// lot to its own streams is not read whole only to keep its end.
constexpr int kLogTailLines = 1000;

Result<nlohmann::json> parse_body(const Response& response, std::string_view what) {
  try {
    return nlohmann::json::parse(response.body);
  } catch (const nlohmann::json::exception& e) {
    return Error{kDockerError, "unexpected answer from the Docker daemon to " + std::string(what) +
                                   ": " + e.what()};
  }
}

std::map<std::string, std::string> labels_of(const nlohmann::json& labels) {
  std::map<std::string, std::string> out;
  if (!labels.is_object()) return out;
  for (const auto& [name, value] : labels.items()) {
    if (value.is_string()) out[name] = value.get<std::string>();
  }
  return out;
}

// Splits the multiplexed stream of GET /containers/{id}/logs (for containers without a TTY each
// frame is an 8-byte header, whose last four bytes are the big-endian payload size, then the
// payload) and keeps the last `limit` bytes of payload.
class LogDemuxer {
 public:
  explicit LogDemuxer(std::size_t limit) : limit_(limit) {}

  void feed(std::string_view piece) {
    while (!piece.empty()) {
      if (remaining_ == 0) {
        std::size_t take = std::min(piece.size(), 8 - header_.size());
        header_.append(piece.substr(0, take));
        piece.remove_prefix(take);
        if (header_.size() < 8) return;
        remaining_ = 0;
        for (int i = 4; i < 8; ++i)
          remaining_ = (remaining_ << 8) | static_cast<unsigned char>(header_[i]);
        header_.clear();
        continue;
      }
      std::size_t take = std::min<std::size_t>(piece.size(), remaining_);
      keep(piece.substr(0, take));
      remaining_ -= take;
      piece.remove_prefix(take);
    }
  }

  std::string take() { return std::move(output_); }

 private:
  void keep(std::string_view payload) {
    output_.append(payload);
    if (output_.size() > 2 * limit_) output_.erase(0, output_.size() - limit_);
  }

  std::size_t limit_;
  std::string header_;
  std::uint64_t remaining_ = 0;
  std::string output_;
};

// The daemon's RFC 3339 times ("2024-11-22T11:20:33.123456789Z"); its zero time
// ("0001-01-01T00:00:00Z", for a container that never started or ended) and anything that does
// not parse are unset.
std::optional<SystemTime> parse_docker_time(const std::string& text) {
  std::tm tm{};
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) != 6 ||
      tm.tm_year < 1970) {
    return std::nullopt;
  }
  long long nanos = 0;
  if (text[consumed] == '.') {
    int digits = 0;
    for (std::size_t i = consumed + 1; i < text.size() && std::isdigit(text[i]); ++i, ++digits) {
      if (digits < 9) nanos = nanos * 10 + (text[i] - '0');
    }
    for (; digits < 9; ++digits) nanos *= 10;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  std::time_t seconds = ::timegm(&tm);
  return std::chrono::system_clock::from_time_t(seconds) +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::nanoseconds(nanos));
}

class DockerRuntime final : public ContainerRuntime {
 public:
  DockerRuntime(std::filesystem::path socket, const DockerRuntimeConfig& config)
      : client_(std::move(socket), config.engine),
        builder_(client_, config.builder),
        request_timeout_(config.engine.request_timeout) {}

  Result<std::string> api_version() override { return client_.api_version(); }

  Result<EnsuredImage> ensure_image(const ImageRequest& request,
                                    const ProgressSink& progress) override {
    return builder_.ensure(request, progress);
  }

  Result<std::string> create_container(const ContainerSpec& spec) override {
    std::string target = "/containers/create";
    if (!spec.name.empty()) target += "?name=" + query_escape(spec.name);
    auto response = client_.call(Request::post(target, create_request_body(spec).dump()));
    if (!response) return response.error();
    if (!response->success()) return daemon_error(*response, "creating the run's container");
    auto body = parse_body(*response, "container create");
    if (!body) return body.error();
    return body->value("Id", "");
  }

  Result<void> start_container(const std::string& id) override {
    return expect_success(Request::post(container_path(id) + "/start"), "starting container " + id,
                          {304});
  }

  Result<void> ping(std::chrono::milliseconds limit) override {
    Request request = Request::get("/_ping").with_timeout(limit);
    request.versioned = false;
    auto response = client_.call(request);
    if (!response) return response.error();
    if (!response->success()) return daemon_error(*response, "pinging the Docker daemon");
    return ok();
  }

  Result<ContainerExit> wait_container(const std::string& id) override {
    // No time limit: this call returns when the run ends, however long that takes.
    auto response = client_.call(Request::post(container_path(id) + "/wait?condition=not-running")
                                     .with_timeout(std::chrono::milliseconds(0)));
    if (!response) return response.error();
    return exit_from_wait(id, *response);
  }

  Result<std::optional<ContainerExit>> wait_container_for(
      const std::string& id, std::chrono::milliseconds limit) override {
    auto response = client_.call(
        Request::post(container_path(id) + "/wait?condition=not-running").with_timeout(limit));
    if (response) {
      auto exit = exit_from_wait(id, *response);
      if (!exit) return exit.error();
      return std::optional<ContainerExit>(*exit);
    }
    // The slice ran out, or the daemon is gone: inspecting tells which (and a container that
    // ended in the instant between the two is seen as ended).
    auto info = inspect_container(id);
    if (!info) return info.error();
    if (info->running) return std::optional<ContainerExit>();
    return std::optional<ContainerExit>(ContainerExit{info->exit_code, info->oom_killed});
  }

  Result<void> stop_container(const std::string& id, std::chrono::seconds grace) override {
    auto request = Request::post(container_path(id) + "/stop?t=" + std::to_string(grace.count()))
                       .with_timeout(request_timeout_ + grace);
    return expect_success(request, "stopping container " + id, {304});
  }

  Result<void> kill_container(const std::string& id, const std::string& signal) override {
    return expect_success(
        Request::post(container_path(id) + "/kill?signal=" + query_escape(signal)),
        "signalling container " + id, {});
  }

  Result<void> remove_container(const std::string& id) override {
    return expect_success(Request::del(container_path(id) + "?v=1&force=1"),
                          "removing container " + id, {404});
  }

  Result<std::vector<ContainerInfo>> list_containers(const std::string& label) override {
    std::string filters = nlohmann::json({{"label", {label}}}).dump();
    auto response =
        client_.call(Request::get("/containers/json?all=1&filters=" + query_escape(filters)));
    if (!response) return response.error();
    if (!response->success()) return daemon_error(*response, "listing containers");
    auto body = parse_body(*response, "container list");
    if (!body) return body.error();
    std::vector<ContainerInfo> containers;
    for (const auto& item : *body) {
      ContainerInfo info;
      info.id = item.value("Id", "");
      info.image = item.value("Image", "");
      info.state = item.value("State", "");
      info.labels = labels_of(item.value("Labels", nlohmann::json()));
      auto names = item.value("Names", nlohmann::json::array());
      if (!names.empty() && names[0].is_string()) info.name = names[0].get<std::string>().substr(1);
      info.running = info.state == "running";
      containers.push_back(std::move(info));
    }
    return containers;
  }

  Result<ContainerInfo> inspect_container(const std::string& id) override {
    auto response = client_.call(Request::get(container_path(id) + "/json"));
    if (!response) return response.error();
    if (!response->success()) return daemon_error(*response, "inspecting container " + id);
    auto body = parse_body(*response, "container inspect");
    if (!body) return body.error();
    auto state = body->value("State", nlohmann::json::object());
    auto config = body->value("Config", nlohmann::json::object());
    std::string name = body->value("Name", "");
    ContainerInfo info;
    info.id = body->value("Id", "");
    info.name = name.starts_with("/") ? name.substr(1) : name;
    info.image = config.value("Image", "");
    info.state = state.value("Status", "");
    info.running = state.value("Running", false);
    info.pid = static_cast<pid_t>(state.value("Pid", 0));
    info.exit_code = state.value("ExitCode", 0);
    info.oom_killed = state.value("OOMKilled", false);
    info.labels = labels_of(config.value("Labels", nlohmann::json()));
    info.started_at = parse_docker_time(state.value("StartedAt", ""));
    info.finished_at = parse_docker_time(state.value("FinishedAt", ""));
    return info;
  }

  Result<std::string> container_output(const std::string& id, std::size_t max_bytes) override {
    LogDemuxer demuxer(max_bytes);
    auto streamed =
        client_.stream(Request::get(container_path(id) +
                                    "/logs?stdout=1&stderr=1&tail=" + std::to_string(kLogTailLines))
                           .with_timeout(request_timeout_),
                       [&](std::string_view piece) { demuxer.feed(piece); });
    if (!streamed) return streamed.error();
    std::string output = demuxer.take();
    if (output.size() > max_bytes) output.erase(0, output.size() - max_bytes);
    return output;
  }

  Result<std::vector<ManagedImage>> list_managed_images() override {
    return builder_.list_managed();
  }

  Result<PruneReport> prune_images(std::uint64_t budget_bytes) override {
    return builder_.prune(budget_bytes);
  }

 private:
  Result<ContainerExit> exit_from_wait(const std::string& id, const Response& response) {
    if (!response.success()) return daemon_error(response, "waiting for container " + id);
    auto body = parse_body(response, "container wait");
    if (!body) return body.error();
    auto error = body->value("Error", nlohmann::json());
    if (error.is_object() && !error.value("Message", "").empty()) {
      return Error{kDockerError, "waiting for container " + id + ": " + error.value("Message", "")};
    }
    ContainerExit exit;
    exit.exit_code = body->value("StatusCode", -1);
    auto info = inspect_container(id);
    if (!info) return info.error();
    exit.oom_killed = info->oom_killed;
    return exit;
  }

  static std::string container_path(const std::string& id) {
    return "/containers/" + path_escape(id);
  }

  // A call whose success has no body: 2xx, or one of `also_fine` (e.g. 304 "already stopped").
  Result<void> expect_success(const Request& request, const std::string& doing,
                              std::initializer_list<int> also_fine) {
    auto response = client_.call(request);
    if (!response) return response.error();
    if (response->success()) return ok();
    for (int status : also_fine) {
      if (response->status == status) return ok();
    }
    return daemon_error(*response, doing);
  }

  EngineClient client_;
  ImageBuilder builder_;
  std::chrono::milliseconds request_timeout_;
};

}  // namespace

std::string to_string(ImageSource source) {
  switch (source) {
    case ImageSource::CacheHit:
      return "cache-hit";
    case ImageSource::Built:
      return "built";
    case ImageSource::Present:
      return "present";
    case ImageSource::Pulled:
      return "pulled";
  }
  return "unknown";
}

Result<std::unique_ptr<ContainerRuntime>> make_docker_runtime(const DockerRuntimeConfig& config) {
  auto socket = resolve_docker_socket(config.engine.docker_host, std::getenv("DOCKER_HOST"));
  if (!socket) return socket.error();
  return std::unique_ptr<ContainerRuntime>(std::make_unique<DockerRuntime>(*socket, config));
}

Result<ContainerOutcome> run_container(ContainerRuntime& runtime, const ContainerSpec& spec,
                                       const std::function<void(const std::string&)>& on_started) {
  std::error_code ec;
  std::filesystem::create_directories(spec.std_log.parent_path(), ec);
  if (ec) {
    return Error{"IoError",
                 "cannot create " + spec.std_log.parent_path().string() + ": " + ec.message()};
  }
  auto id = runtime.create_container(spec);
  if (!id) return id.error();
  ContainerOutcome outcome;
  outcome.container_id = *id;
  if (auto started = runtime.start_container(*id); !started) {
    (void)runtime.remove_container(*id);
    return started.error();
  }
  if (on_started) on_started(*id);
  // When the wait itself fails (the daemon went away) the container may still be running: it is
  // left alone, found again later by its run-id label.
  auto exit = runtime.wait_container(*id);
  if (!exit) return exit.error();
  outcome.exit_code = exit->exit_code;
  outcome.oom_killed = exit->oom_killed;
  if (auto output = runtime.container_output(*id, kRuntimeOutputLimit)) {
    outcome.runtime_output = std::move(*output);
  }
  if (auto removed = runtime.remove_container(*id); !removed) {
    outcome.cleanup_error = removed.error().message;
  }
  return outcome;
}

}  // namespace amlnode::docker
