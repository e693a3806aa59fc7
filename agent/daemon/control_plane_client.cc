#include "agent/daemon/control_plane_client.h"

#include "common/error_codes.h"
#include "common/format.h"
#include "common/json.h"

namespace amlnode::agent {

namespace {

using nlohmann::json;

// Answers are small JSON objects; anything past this is not the protocol's.
constexpr std::uint64_t kMaxJsonAnswer = 1 << 20;
// A long poll gets its wait plus this much for the server to answer.
constexpr std::chrono::seconds kLongPollMargin{15};

std::string run_path(const std::string& run_id) {
  return "/v1/runs/" + url_path_escape(run_id, false);
}
std::string node_path(const std::string& node_id) {
  return "/v1/nodes/" + url_path_escape(node_id, false);
}

// The error an answer other than 2xx stands for.
Error answer_error(const HttpResponse& response) {
  json body = parse_untrusted_json(response.body);
  std::string code;
  std::string message;
  if (body.is_object() && body.contains("error") && body["error"].is_object()) {
    code = body["error"].value("code", "");
    message = body["error"].value("message", "");
  }
  std::string detail = "HTTP " + std::to_string(response.status) +
                       (code.empty() ? "" : " " + code) + (message.empty() ? "" : ": " + message);
  if (response.status == 401) return Error{errors::kUnauthorized, detail};
  if (response.status == 403) return Error{"Forbidden", detail};
  if (response.status == 409 && body.is_object() && body.value("stop", false)) {
    return Error{errors::kStaleEpoch, detail};
  }
  // The server being overloaded or restarting is as good as unreachable: the caller retries.
  if (response.status == 502 || response.status == 503 || response.status == 504) {
    return Error{errors::kUnreachable, detail};
  }
  return Error{errors::kRejected, detail};
}

Result<json> json_answer(Result<HttpResponse> response) {
  if (!response.ok()) return response.error();
  if (response->status < 200 || response->status > 299) return answer_error(*response);
  json body = parse_untrusted_json(response->body);
  if (!body.is_object()) return Error{"BadAnswer", "the answer is not a JSON object"};
  return body;
}

Result<json> post_json_to(HttpClient& http, const std::string& target, const std::string& token,
                          const json& body,
                          std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  HttpRequest request;
  request.method = "POST";
  request.target = target;
  request.bearer_token = token;
  request.content_type = "application/json";
  request.body = body.dump();
  request.timeout = timeout;
  request.max_response_bytes = kMaxJsonAnswer;
  return json_answer(http.send(request));
}

template <class T>
Result<T> field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end()) return Error{"BadAnswer", std::string("the answer has no ") + key};
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    return Error{"BadAnswer", std::string("the answer's ") + key + " has the wrong type"};
  }
}

// A number of seconds the server sets; the default when it is missing, not a whole number, or
// outside 1 s to a day (a broken or hostile answer must not make the node spin or sleep forever).
std::chrono::seconds seconds_field(const json& body, const char* key, int fallback) {
  auto it = body.find(key);
  if (it == body.end() || !it->is_number_integer()) return std::chrono::seconds(fallback);
  auto value = it->get<std::int64_t>();
  if (value < 1 || value > 86400) return std::chrono::seconds(fallback);
  return std::chrono::seconds(value);
}

json facts_json(const NodeFacts& facts) {
  return {{"hostname", facts.hostname},
          {"ips", facts.ips},
          {"ssh_port", facts.ssh_port},
          {"cpus", facts.cpus},
          {"memory_bytes", facts.memory_bytes},
          {"gpus", facts.gpus},
          {"labels", facts.labels},
          {"agent_version", facts.agent_version}};
}

class HttpControlPlaneClient final : public ControlPlaneClient {
 public:
  explicit HttpControlPlaneClient(std::unique_ptr<HttpClient> http) : http_(std::move(http)) {}

  Result<Registration> register_node(const std::string& registration_token, const NodeFacts& facts,
                                     const std::string& registration_key) override {
    json request = facts_json(facts);
    if (!registration_key.empty()) request["registration_key"] = registration_key;
    auto body = post_json("/v1/nodes/register", registration_token, request);
    if (!body.ok()) return body.error();
    auto node_id = field<std::string>(*body, "node_id");
    auto token = field<std::string>(*body, "node_token");
    if (!node_id.ok()) return node_id.error();
    if (!token.ok()) return token.error();
    Registration registration;
    registration.identity = {*node_id, *token};
    registration.heartbeat_interval = seconds_field(*body, "heartbeat_interval_seconds", 5);
    registration.heartbeat_timeout = seconds_field(*body, "heartbeat_timeout_seconds", 30);
    return registration;
  }

  Result<HeartbeatAnswer> heartbeat(const NodeIdentity& node,
                                    const HeartbeatReport& report) override {
    auto body = post_json(node_path(node.node_id) + "/heartbeat", node.node_token,
                          wire::heartbeat_body(report));
    if (!body.ok()) return body.error();
    HeartbeatAnswer answer;
    answer.heartbeat_interval = seconds_field(*body, "heartbeat_interval_seconds", 5);
    if (auto commands = body->find("commands"); commands != body->end())
      answer.commands = wire::commands_from_json(*commands);
    if (auto removed = body->find("removed"); removed != body->end() && removed->is_boolean())
      answer.removed = removed->get<bool>();
    return answer;
  }

  Result<std::vector<LeasedRun>> lease(const NodeIdentity& node, int max_runs,
                                       std::chrono::seconds wait, int rendezvous_port) override {
    auto body = post_json(node_path(node.node_id) + "/lease", node.node_token,
                          {{"max_runs", max_runs},
                           {"wait_seconds", wait.count()},
                           {"rendezvous_port", rendezvous_port}},
                          wait + kLongPollMargin);
    if (!body.ok()) return body.error();
    auto runs = body->find("runs");
    if (runs == body->end() || !runs->is_array())
      return Error{"BadAnswer", "the lease answer has no runs"};
    std::vector<LeasedRun> leased;
    for (const auto& item : *runs) {
      auto run = wire::leased_run_from_json(item);
      if (!run.ok()) return run.error();
      leased.push_back(std::move(*run));
    }
    return leased;
  }

  Result<bool> wait_at_barrier(const NodeIdentity& node, const std::string& run_id,
                               std::int64_t epoch, std::chrono::seconds wait) override {
    auto body =
        post_json(run_path(run_id) + "/barrier", node.node_token,
                  {{"epoch", epoch}, {"wait_seconds", wait.count()}}, wait + kLongPollMargin);
    if (!body.ok()) return body.error();
    auto open = body->find("open");
    if (open == body->end() || !open->is_boolean())
      return Error{"BadAnswer", "the barrier answer has no open flag"};
    return open->get<bool>();
  }

  Result<void> download_snapshot(const NodeIdentity& node, const std::string& run_id,
                                 std::int64_t epoch, const std::filesystem::path& destination,
                                 std::uint64_t max_bytes) override {
    HttpRequest request;
    request.target = run_path(run_id) + "/snapshot";
    request.bearer_token = node.node_token;
    request.headers.emplace_back("X-Amlnode-Epoch", std::to_string(epoch));
    request.response_file = destination;
    request.max_response_bytes = max_bytes;
    request.timeout = std::chrono::minutes(10);
    auto response = http_->send(request);
    if (!response.ok()) return response.error();
    if (response->status != 200) return answer_error(*response);
    return ok();
  }

  Result<std::string> report_status(const NodeIdentity& node, const StatusReport& report) override {
    json request = {
        {"epoch", report.epoch}, {"status", report.status}, {"timings", report.timings}};
    request["exit_code"] = report.exit_code ? json(*report.exit_code) : json(nullptr);
    request["error"] = report.error
                           ? json{{"code", report.error->code}, {"message", report.error->message}}
                           : json(nullptr);
    if (!report.dropped_logs.empty()) request["dropped_logs"] = report.dropped_logs;
    auto body = post_json(run_path(report.run_id) + "/status", node.node_token, request);
    if (!body.ok()) return body.error();
    return field<std::string>(*body, "status");
  }

  Result<LogAppend> append_log(const NodeIdentity& node, const std::string& run_id,
                               std::int64_t epoch, const std::string& stream, std::uint64_t offset,
                               std::string_view bytes) override {
    HttpRequest request;
    request.method = "PUT";
    request.target = run_path(run_id) + "/logs/" + encode_stream_path(stream) +
                     "?offset=" + std::to_string(offset);
    request.bearer_token = node.node_token;
    request.headers.emplace_back("X-Amlnode-Epoch", std::to_string(epoch));
    request.content_type = "application/octet-stream";
    request.borrowed_body = bytes;
    request.max_response_bytes = kMaxJsonAnswer;
    auto response = http_->send(request);
    if (!response.ok()) return response.error();
    json body = parse_untrusted_json(response->body);
    bool has_length =
        body.is_object() && body.contains("length") && body["length"].is_number_unsigned();
    if (response->status == 409 && has_length && !body.value("stop", false)) {
      return LogAppend{body["length"].get<std::uint64_t>(), false};
    }
    if (response->status != 200) return answer_error(*response);
    if (!has_length) return Error{"BadAnswer", "the log answer has no length"};
    return LogAppend{body["length"].get<std::uint64_t>(), true};
  }

  Result<void> upload_outputs(const NodeIdentity& node, const std::string& run_id,
                              std::int64_t epoch, std::string tar_gz) override {
    HttpRequest request;
    request.method = "PUT";
    request.target = run_path(run_id) + "/outputs";
    request.bearer_token = node.node_token;
    request.headers.emplace_back("X-Amlnode-Epoch", std::to_string(epoch));
    request.content_type = "application/gzip";
    request.body = std::move(tar_gz);
    request.timeout = std::chrono::minutes(10);
    request.max_response_bytes = kMaxJsonAnswer;
    auto body = json_answer(http_->send(request));
    if (!body.ok()) return body.error();
    return ok();
  }

  void shut_down() override { http_->cancel_all(); }

 private:
  Result<json> post_json(const std::string& target, const std::string& token, const json& body,
                         std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    return post_json_to(*http_, target, token, body, timeout);
  }

  std::unique_ptr<HttpClient> http_;
};

class HttpLaunchClient final : public LaunchClient {
 public:
  HttpLaunchClient(std::unique_ptr<HttpClient> http, std::string run_id, std::string token)
      : http_(std::move(http)), path_(run_path(run_id) + "/launches"), token_(std::move(token)) {}

  Result<int> add_launch(const std::string& host, const std::string& command,
                         const std::string& key) override {
    auto body =
        post_json_to(*http_, path_, token_, {{"host", host}, {"command", command}, {"key", key}});
    if (!body.ok()) return body.error();
    return field<int>(*body, "launch");
  }

  Result<std::optional<TakenLaunch>> take_launch(int node_rank,
                                                 std::chrono::seconds wait) override {
    auto body = post_json_to(*http_, path_ + "/take", token_,
                             {{"node_rank", node_rank}, {"wait_seconds", wait.count()}},
                             wait + kLongPollMargin);
    if (!body.ok()) return body.error();
    auto launch = body->find("launch");
    if (launch == body->end() || launch->is_null()) return std::optional<TakenLaunch>();
    if (!launch->is_object()) return Error{"BadAnswer", "the answer's launch is not an object"};
    auto id = field<int>(*launch, "id");
    auto command = field<std::string>(*launch, "command");
    if (!id.ok()) return id.error();
    if (!command.ok()) return command.error();
    return std::optional<TakenLaunch>(TakenLaunch{*id, *command});
  }

  Result<void> report_launch(int id, wire::LaunchState state,
                             std::optional<int> exit_code) override {
    json request = {{"state", wire::to_string(state)}};
    if (exit_code) request["exit_code"] = *exit_code;
    auto body = post_json_to(*http_, path_ + "/" + std::to_string(id), token_, request);
    if (!body.ok()) return body.error();
    return ok();
  }

  Result<std::optional<int>> wait_for_launch(int id, std::chrono::seconds wait) override {
    auto body = post_json_to(*http_, path_ + "/" + std::to_string(id) + "/wait", token_,
                             {{"wait_seconds", wait.count()}}, wait + kLongPollMargin);
    if (!body.ok()) return body.error();
    auto state = field<std::string>(*body, "state");
    if (!state.ok()) return state.error();
    if (wire::launch_state_from_string(*state) != wire::LaunchState::Exited)
      return std::optional<int>();
    auto code = field<int>(*body, "exit_code");
    if (!code.ok()) return code.error();
    return std::optional<int>(*code);
  }

 private:
  std::unique_ptr<HttpClient> http_;
  std::string path_;
  std::string token_;
};

}  // namespace

std::unique_ptr<LaunchClient> make_http_launch_client(std::unique_ptr<HttpClient> http,
                                                      std::string run_id, std::string token) {
  return std::make_unique<HttpLaunchClient>(std::move(http), std::move(run_id), std::move(token));
}

std::string encode_stream_path(const std::string& stream) {
  return url_path_escape(stream, true);
}

std::unique_ptr<ControlPlaneClient> make_http_control_plane_client(
    std::unique_ptr<HttpClient> http) {
  return std::make_unique<HttpControlPlaneClient>(std::move(http));
}

}  // namespace amlnode::agent
