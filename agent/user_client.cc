#include "agent/user_client.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/format.h"
#include "common/fs.h"
#include "common/json.h"
#include "executors/archive.h"
#include "spec/load.h"
#include "spec/run_status.h"
#include "spec/shapes.h"
#include "spec/tree.h"

namespace amlnode::agent {

using nlohmann::json;

namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::string(value) : fallback;
}

// The largest job file read (the control plane's JSON body limit is 1 MiB, the file goes inside).
constexpr std::size_t kMaxJobFileBytes = 1 << 20;
// The snapshot limit of Azure ML (300 MB), which the control plane enforces too.
constexpr std::uint64_t kMaxSnapshotBytes = 300u << 20;

}  // namespace

Result<HttpResponse> UserClient::call(const std::string& method, const std::string& target,
                                      const std::string& body, const std::string& content_type,
                                      std::chrono::seconds timeout) {
  HttpRequest request;
  request.method = method;
  request.target = target;
  request.bearer_token = token_;
  if (!body.empty() || method != "GET") {
    request.body = body;
    request.content_type = content_type;
  }
  request.timeout = timeout;
  return http_->send(request);
}

Result<UserClient> make_user_client(const UserAccess& access) {
  std::string url =
      access.control_plane.empty() ? env_or("AMLNODE_CONTROL_PLANE", "") : access.control_plane;
  if (url.empty()) return Error{"Usage", "--control-plane (or $AMLNODE_CONTROL_PLANE) is required"};
  auto endpoint = parse_http_url(url);
  if (!endpoint.ok()) return endpoint.error();
  std::string token =
      access.user_token.empty() ? env_or("AMLNODE_USER_TOKEN", "") : access.user_token;
  if (token.empty() && !access.user_token_file.empty()) {
    auto text = read_file(access.user_token_file, 64 * 1024);
    if (!text.ok()) return text.error();
    token = *text;
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back())))
      token.pop_back();
  }
  if (token.empty())
    return Error{"Usage", "--user-token, $AMLNODE_USER_TOKEN or --user-token-file is required"};
  HttpTlsOptions tls;
  std::string ca = access.ca_file.empty() ? env_or("AMLNODE_CA_FILE", "") : access.ca_file;
  if (!ca.empty()) tls.ca_file = ca;
  return UserClient(make_http_client(*endpoint, tls), token);
}

bool answered(const Result<HttpResponse>& response, const std::string& what) {
  if (!response.ok()) {
    std::fprintf(stderr, "amlnode: %s: %s\n", what.c_str(), response.error().message.c_str());
    return false;
  }
  if (response->status >= 200 && response->status < 300) return true;
  auto body = parse_untrusted_json(response->body);
  std::string message = body.is_object() && body.contains("error") && body["error"].is_object()
                            ? body["error"].value("message", "")
                            : response->body;
  std::fprintf(stderr, "amlnode: %s: HTTP %d: %s\n", what.c_str(), response->status,
               message.c_str());
  return false;
}

namespace {

// The job text with a command line's script and arguments written in, as JSON (which both shapes
// read): a .runconfig's script and arguments; a native file's entry_script (or script, in the
// ScriptRunConfig shape) and arguments; whatever the file said to run instead is taken out.
Result<std::string> job_text_with_script(const std::string& text, const std::string& file_name,
                                         const std::string& script,
                                         const std::vector<std::string>& arguments) {
  auto parsed = spec::detail::parse_yaml(text);
  if (!parsed.root || !parsed.root->is_mapping())
    return Error{"InvalidJob", file_name + ": not a mapping of job fields"};
  json job = spec::detail::to_json(*parsed.root);
  bool runconfig = std::filesystem::path(file_name).extension() == ".runconfig" ||
                   spec::detail::looks_like_runconfig(*parsed.root);
  for (const char* key : {"command", "script_params", "entry_script", "script"}) job.erase(key);
  bool script_run_config = false;
  for (const char* key : {"environment", "distributed_job_config", "docker_runtime_config"})
    script_run_config = script_run_config || job.contains(key);
  job[runconfig || script_run_config ? "script" : "entry_script"] = script;
  job["arguments"] = arguments;
  return job.dump(2);
}

}  // namespace

std::optional<std::string> submit_job(UserClient& client, const SubmitRequest& request,
                                      bool* invalid) {
  auto refuse = [&](const Error& error) -> std::optional<std::string> {
    std::fprintf(stderr, "amlnode: %s\n", error.message.c_str());
    return std::nullopt;
  };
  spec::LoadOptions options;
  if (!request.source_dir.empty()) options.source_dir_override = request.source_dir;
  if (!request.experiment.empty()) options.experiment_override = request.experiment;
  options.script_override = request.script;
  options.arguments_override = request.arguments;
  auto loaded = spec::load_job_file(request.job_file, options);
  for (const auto& error : loaded.errors)
    std::fprintf(stderr, "%s: error: %s\n", request.job_file.c_str(), error.to_string().c_str());
  if (!loaded.ok()) {
    if (invalid) *invalid = true;
    return std::nullopt;
  }
  auto text = read_file(request.job_file, kMaxJobFileBytes);
  if (!text.ok()) return refuse(text.error());
  std::string file_name = std::filesystem::path(request.job_file).filename().string();
  if (request.script) {
    auto rewritten = job_text_with_script(*text, file_name, *request.script, request.arguments);
    if (!rewritten.ok()) return refuse(rewritten.error());
    *text = std::move(*rewritten);
  }
  // The job file is left out of the snapshot, as `amlnode run` leaves it out of wd/.
  auto listing = executors::list_snapshot(loaded.job->source_directory, {}, {loaded.job->job_file});
  if (!listing.ok()) return refuse(listing.error());
  auto packed =
      executors::pack_snapshot_to_memory(loaded.job->source_directory, *listing, kMaxSnapshotBytes);
  if (!packed.ok()) return refuse(packed.error());
  std::string name = request.experiment.empty() ? loaded.job->experiment_name : request.experiment;
  json body = {{"job", {{"text", *text}, {"file_name", file_name}}},
               {"experiment_name", name},
               {"compute_name", request.compute}};
  // A run across nodes is leased as a gang of this many nodes.
  if (loaded.job->node_count > 1) body["node_count"] = loaded.job->node_count;
  if (const auto& task = loaded.job->batch_task) body["batch_task"] = {{"pool_id", task->pool_id}};
  auto created = client.call("POST", "/v1/runs", body.dump());
  if (!answered(created, "submit")) return std::nullopt;
  auto answer = parse_untrusted_json(created->body);
  std::string id = answer.is_object() ? answer.value("run_id", "") : "";
  if (id.empty()) return refuse(Error{"BadAnswer", "submit: the answer names no run id"});
  auto uploaded = client.call("PUT", "/v1/runs/" + url_path_escape(id) + "/snapshot", packed->data,
                              "application/gzip", std::chrono::seconds(600));
  if (!answered(uploaded, "snapshot upload")) return std::nullopt;
  return id;
}

Result<std::string> run_status(UserClient& client, const std::string& run_id) {
  auto run = client.call("GET", "/v1/runs/" + url_path_escape(run_id));
  if (!run.ok()) return run.error();
  auto body = parse_untrusted_json(run->body);
  if (run->status != 200 || !body.is_object())
    return Error{"BadAnswer", "status: HTTP " + std::to_string(run->status)};
  return body.value("status", "");
}

namespace {

constexpr const char* kStdLog = "user_logs/std_log.txt";
constexpr const char* kRankZeroLog = "user_logs/std_log_process_00.txt";

// The run's main log: std_log.txt, or rank 0's log for a run of several processes. Following a
// run that has written neither yet waits (listing its streams twice a second) until one appears
// or the run is over.
std::string main_log_stream(UserClient& client, const LogRequest& request) {
  for (;;) {
    auto listed = client.call(
        "GET",
        "/v1/runs/" + url_path_escape(request.run_id) + "/logs" +
            (request.attempt > 0 ? "?attempt=" + std::to_string(request.attempt) : std::string()));
    if (!listed.ok() || listed->status != 200) return kStdLog;
    auto body = parse_untrusted_json(listed->body);
    const auto streams = body.is_object() && body.contains("streams") && body["streams"].is_object()
                             ? body["streams"]
                             : nlohmann::json::object();
    if (streams.contains(kStdLog)) return kStdLog;
    if (streams.contains(kRankZeroLog)) return kRankZeroLog;
    if (!request.follow) return kStdLog;
    auto status = run_status(client, request.run_id);
    auto parsed = status.ok() ? spec::run_status_from_string(*status) : std::nullopt;
    if (!parsed || spec::is_terminal(*parsed)) return kStdLog;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

}  // namespace

int print_log(UserClient& client, const LogRequest& given) {
  LogRequest request = given;
  if (request.stream.empty()) request.stream = main_log_stream(client, request);
  std::uint64_t offset = 0;
  std::string seen_attempt;
  // Following long-polls until the run is over; then one more read to the end, since bytes may
  // have landed between the last read and the status.
  bool waiting = request.follow;
  for (;;) {
    std::string target = "/v1/runs/" + url_path_escape(request.run_id) + "/logs/" +
                         url_path_escape(request.stream, true) +
                         "?offset=" + std::to_string(offset);
    if (request.attempt > 0) target += "&attempt=" + std::to_string(request.attempt);
    if (waiting) target += "&wait_seconds=20";
    auto response = client.call("GET", target, "", "", std::chrono::seconds(40));
    if (!answered(response, "logs")) return 1;
    // The run was leased again and its log starts over (the server set the earlier attempt's
    // aside): what was printed stays, and the new attempt is printed from its first byte.
    std::string now = response->header("X-Amlnode-Attempt");
    if (!seen_attempt.empty() && !now.empty() && now != seen_attempt && offset > 0) {
      std::fprintf(stderr,
                   "amlnode: run %s started again (attempt %s); its log starts over (the "
                   "earlier attempt: --attempt %s)\n",
                   request.run_id.c_str(), now.c_str(), seen_attempt.c_str());
      seen_attempt = now;
      offset = 0;
      continue;
    }
    if (!now.empty()) seen_attempt = now;
    std::fwrite(response->body.data(), 1, response->body.size(), stdout);
    std::fflush(stdout);
    offset += response->body.size();
    if (!response->body.empty()) continue;
    if (!waiting) return 0;
    auto status = run_status(client, request.run_id);
    if (!status.ok()) {
      std::fprintf(stderr, "amlnode: status: %s\n", status.error().message.c_str());
      return 1;
    }
    auto parsed = spec::run_status_from_string(*status);
    waiting = !(parsed && spec::is_terminal(*parsed));
  }
}

}  // namespace amlnode::agent
