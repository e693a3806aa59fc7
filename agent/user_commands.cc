#include "agent/user_commands.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent/daemon/http_client.h"
#include "common/format.h"
#include "common/fs.h"
#include "executors/archive.h"
#include "spec/load.h"

namespace amlnode::agent {

using nlohmann::json;

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::string(value) : fallback;
}

// One call with the user token; a JSON body in, the answer out.
class UserClient {
 public:
  UserClient(std::unique_ptr<HttpClient> http, std::string token)
      : http_(std::move(http)), token_(std::move(token)) {}

  Result<HttpResponse> call(const std::string& method, const std::string& target,
                            const std::string& body = "",
                            const std::string& content_type = "application/json",
                            std::chrono::seconds timeout = std::chrono::seconds(30)) {
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

 private:
  std::unique_ptr<HttpClient> http_;
  std::string token_;
};

// Prints a refused answer's error; true when the answer is 2xx.
bool answered(const Result<HttpResponse>& response, const std::string& what) {
  if (!response.ok()) {
    std::fprintf(stderr, "amlnode: %s: %s\n", what.c_str(), response.error().message.c_str());
    return false;
  }
  if (response->status >= 200 && response->status < 300) return true;
  auto body = json::parse(response->body, nullptr, false);
  std::string message = body.is_object() && body.contains("error")
                            ? body["error"].value("message", "")
                            : response->body;
  std::fprintf(stderr, "amlnode: %s: HTTP %d: %s\n", what.c_str(), response->status,
               message.c_str());
  return false;
}

// One line per metric name (its kind, how many values, the last one and its step), then the last
// resource sample.
std::string metrics_text(const json& body) {
  std::string out;
  const json& metrics = body.value("metrics", json::object());
  char line[512];
  if (metrics.empty()) out += "no metrics logged\n";
  if (!metrics.empty()) {
    std::snprintf(line, sizeof line, "%-32s %-7s %7s  %s\n", "NAME", "KIND", "COUNT", "LAST");
    out += line;
  }
  for (const auto& [name, entry] : metrics.items()) {
    const json& last = entry.value("last", json::object());
    std::string value = last.contains("value")    ? last["value"].dump()
                        : last.contains("values") ? last["values"].dump()
                                                  : last.value("row", json::object()).dump();
    if (last.contains("step")) value += " (step " + last["step"].dump() + ")";
    std::snprintf(line, sizeof line, "%-32s %-7s %7llu  %.300s\n", name.c_str(),
                  entry.value("kind", "").c_str(),
                  static_cast<unsigned long long>(entry.value("count", 0ull)), value.c_str());
    out += line;
  }
  if (body.value("truncated", false))
    out += "(only the last 4 MiB of the run's metrics are shown)\n";
  const json& r = body.contains("resources") ? body["resources"] : json(nullptr);
  if (r.is_object()) {
    std::snprintf(line, sizeof line,
                  "resources at %s: CPU %.2f s, memory %s (peak %s), read %s, written %s, "
                  "%llu process(es), GPU memory %s\n",
                  r.value("time", "").c_str(), r.value("cpu_seconds", 0.0),
                  human_bytes(r.value("memory_bytes", 0.0)).c_str(),
                  human_bytes(r.value("memory_peak_bytes", 0.0)).c_str(),
                  human_bytes(r.value("io_read_bytes", 0.0)).c_str(),
                  human_bytes(r.value("io_write_bytes", 0.0)).c_str(),
                  static_cast<unsigned long long>(r.value("processes", 0ull)),
                  human_bytes(r.value("gpu_memory_bytes", 0.0)).c_str());
    out += line;
  }
  return out;
}

}  // namespace

struct UserCommands::State {
  std::string control_plane;
  std::string user_token;
  std::string user_token_file;
  std::string ca_file;
  std::string job_file;
  std::string compute;
  std::string experiment;
  std::string source_dir;
  std::string run_id;
  std::string stream = "user_logs/std_log.txt";
  std::string compute_name;
  unsigned attempt = 0;  // 0: the current attempt
  bool follow = false;
  bool as_json = false;
  CLI::App *submit = nullptr, *status = nullptr, *logs = nullptr, *cancel = nullptr,
           *nodes = nullptr, *compute_status = nullptr, *metrics = nullptr;

  Result<UserClient> client() const {
    std::string url = control_plane.empty() ? env_or("AMLNODE_CONTROL_PLANE", "") : control_plane;
    if (url.empty())
      return Error{"Usage", "--control-plane (or $AMLNODE_CONTROL_PLANE) is required"};
    auto endpoint = parse_http_url(url);
    if (!endpoint.ok()) return endpoint.error();
    std::string token = user_token.empty() ? env_or("AMLNODE_USER_TOKEN", "") : user_token;
    if (token.empty() && !user_token_file.empty()) {
      auto text = read_file(user_token_file, 64 * 1024);
      if (!text.ok()) return text.error();
      token = *text;
      while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back())))
        token.pop_back();
    }
    if (token.empty())
      return Error{"Usage", "--user-token, $AMLNODE_USER_TOKEN or --user-token-file is required"};
    HttpTlsOptions tls;
    std::string ca = ca_file.empty() ? env_or("AMLNODE_CA_FILE", "") : ca_file;
    if (!ca.empty()) tls.ca_file = ca;
    return UserClient(make_http_client(*endpoint, tls), token);
  }

  int run_submit(UserClient& client) const {
    spec::LoadOptions options;
    if (!source_dir.empty()) options.source_dir_override = source_dir;
    auto loaded = spec::load_job_file(job_file, options);
    for (const auto& error : loaded.errors)
      std::fprintf(stderr, "%s: error: %s\n", job_file.c_str(), error.to_string().c_str());
    if (!loaded.ok()) return kExitUsage;
    auto text = read_file(job_file, 1 << 20);
    if (!text.ok()) return fail(text.error());
    // The job file is left out of the snapshot, as `amlnode run` leaves it out of wd/.
    auto listing =
        executors::list_snapshot(loaded.job->source_directory, {}, {loaded.job->job_file});
    if (!listing.ok()) return fail(listing.error());
    auto packed =
        executors::pack_snapshot_to_memory(loaded.job->source_directory, *listing, 300u << 20);
    if (!packed.ok()) return fail(packed.error());
    std::string name = experiment.empty() ? loaded.job->experiment_name : experiment;
    json body = {
        {"job",
         {{"text", *text}, {"file_name", std::filesystem::path(job_file).filename().string()}}},
        {"experiment_name", name},
        {"compute_name", compute}};
    auto created = client.call("POST", "/v1/runs", body.dump());
    if (!answered(created, "submit")) return kExitFailed;
    std::string id = json::parse(created->body).value("run_id", "");
    auto uploaded = client.call("PUT", "/v1/runs/" + id + "/snapshot", packed->data,
                                "application/gzip", std::chrono::seconds(600));
    if (!answered(uploaded, "snapshot upload")) return kExitFailed;
    std::printf("%s\n", id.c_str());
    return 0;
  }

  int run_logs(UserClient& client) const {
    std::uint64_t offset = 0;
    std::string seen_attempt;
    // Following long-polls until the run is over; then one more read to the end, since bytes may
    // have landed between the last read and the status.
    bool waiting = follow;
    for (;;) {
      std::string target =
          "/v1/runs/" + run_id + "/logs/" + stream + "?offset=" + std::to_string(offset);
      if (attempt > 0) target += "&attempt=" + std::to_string(attempt);
      if (waiting) target += "&wait_seconds=20";
      auto response = client.call("GET", target, "", "", std::chrono::seconds(40));
      if (!answered(response, "logs")) return kExitFailed;
      // The run was leased again and its log starts over (the server set the earlier attempt's
      // aside): what was printed stays, and the new attempt is printed from its first byte.
      std::string now = response->header("X-Amlnode-Attempt");
      if (!seen_attempt.empty() && !now.empty() && now != seen_attempt && offset > 0) {
        std::fprintf(stderr,
                     "amlnode: run %s started again (attempt %s); its log starts over (the "
                     "earlier attempt: --attempt %s)\n",
                     run_id.c_str(), now.c_str(), seen_attempt.c_str());
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
      auto run = client.call("GET", "/v1/runs/" + run_id);
      if (!answered(run, "status")) return kExitFailed;
      std::string status = json::parse(run->body).value("status", "");
      waiting = !(status == "Completed" || status == "Failed" || status == "Canceled");
    }
  }

  int print_answer(UserClient& client, const std::string& method, const std::string& target,
                   const std::string& what) const {
    auto response = client.call(method, target, method == "GET" ? "" : "{}");
    if (!answered(response, what)) return kExitFailed;
    auto body = json::parse(response->body, nullptr, false);
    std::printf("%s\n",
                body.is_discarded() ? response->body.c_str() : body.dump(as_json ? -1 : 2).c_str());
    return 0;
  }

  // The run record with its last resource sample ("resources", null before the first one).
  int run_status(UserClient& client) const {
    auto run = client.call("GET", "/v1/runs/" + run_id);
    if (!answered(run, "status")) return kExitFailed;
    auto body = json::parse(run->body, nullptr, false);
    if (body.is_discarded()) return fail(Error{"BadAnswer", "status: the answer is not JSON"});
    auto metrics = client.call("GET", "/v1/runs/" + run_id + "/metrics");
    if (metrics.ok() && metrics->status == 200) {
      auto answer = json::parse(metrics->body, nullptr, false);
      if (answer.is_object()) body["resources"] = answer.value("resources", json(nullptr));
    }
    std::printf("%s\n", body.dump(as_json ? -1 : 2).c_str());
    return 0;
  }

  int run_metrics(UserClient& client) const {
    auto response = client.call("GET", "/v1/runs/" + run_id + "/metrics");
    if (!answered(response, "metrics")) return kExitFailed;
    auto body = json::parse(response->body, nullptr, false);
    if (body.is_discarded()) return fail(Error{"BadAnswer", "metrics: the answer is not JSON"});
    std::string text = as_json ? body.dump() : metrics_text(body);
    std::fwrite(text.data(), 1, text.size(), stdout);
    if (as_json) std::printf("\n");
    return 0;
  }

  static int fail(const Error& error) {
    std::fprintf(stderr, "amlnode: %s\n", error.message.c_str());
    return kExitFailed;
  }
};

UserCommands::UserCommands() : state_(std::make_unique<State>()) {}
UserCommands::~UserCommands() = default;

void UserCommands::add_to(CLI::App& app) {
  State& s = *state_;
  auto common = [&s](CLI::App* command) {
    command->add_option("--control-plane", s.control_plane,
                        "control plane URL (default: $AMLNODE_CONTROL_PLANE)");
    command->add_option("--user-token", s.user_token, "user token (default: $AMLNODE_USER_TOKEN)");
    command->add_option("--user-token-file", s.user_token_file, "file holding the user token");
    command->add_option("--ca-file", s.ca_file,
                        "PEM CA certificate of an https:// control plane (default: "
                        "$AMLNODE_CA_FILE, else the system's trust store)");
    command->add_flag("--json", s.as_json, "compact JSON output");
  };
  s.submit = app.add_subcommand("submit", "Submit a job to a control plane; prints the run id");
  s.submit->add_option("JOB", s.job_file, "job file")->required();
  s.submit->add_option("--compute", s.compute, "compute (cluster) name")->required();
  s.submit->add_option("--experiment", s.experiment, "experiment name (default: the job's)");
  s.submit->add_option("--source-dir", s.source_dir, "source directory, overriding the job file");
  s.status = app.add_subcommand("status", "Show a run");
  s.status->add_option("RUN_ID", s.run_id)->required();
  s.logs = app.add_subcommand("logs", "Print a run's log");
  s.logs->add_option("RUN_ID", s.run_id)->required();
  s.logs
      ->add_option("--stream", s.stream,
                   "the stream (user_logs/std_log.txt, system_logs/..., logs/...)")
      ->capture_default_str();
  s.logs->add_flag("--follow,-f", s.follow, "keep printing until the run ends");
  s.logs
      ->add_option("--attempt", s.attempt,
                   "an earlier attempt of a run that was leased again (1 is the first)")
      ->check(CLI::PositiveNumber)
      ->excludes("--follow");
  s.cancel = app.add_subcommand("cancel", "Cancel a run");
  s.cancel->add_option("RUN_ID", s.run_id)->required();
  s.metrics = app.add_subcommand("metrics", "Show a run's metrics and its last resource sample");
  s.metrics->add_option("RUN_ID", s.run_id)->required();
  s.nodes = app.add_subcommand("nodes", "List the nodes (AmlCompute list_nodes)");
  auto* compute = app.add_subcommand("compute", "Compute (cluster) commands");
  s.compute_status = compute->add_subcommand("status", "Node counts by state");
  s.compute_status->add_option("NAME", s.compute_name)->required();
  for (auto* command : {s.submit, s.status, s.logs, s.cancel, s.nodes, s.compute_status, s.metrics})
    common(command);
}

int UserCommands::run() {
  State& s = *state_;
  bool chosen =
      *s.submit || *s.status || *s.logs || *s.cancel || *s.nodes || *s.compute_status || *s.metrics;
  if (!chosen) return -1;
  auto client = s.client();
  if (!client.ok()) {
    std::fprintf(stderr, "amlnode: %s\n", client.error().message.c_str());
    return kExitUsage;
  }
  if (*s.submit) return s.run_submit(*client);
  if (*s.logs) return s.run_logs(*client);
  if (*s.status) return s.run_status(*client);
  if (*s.metrics) return s.run_metrics(*client);
  if (*s.cancel)
    return s.print_answer(*client, "POST", "/v1/runs/" + s.run_id + "/cancel", "cancel");
  if (*s.nodes) return s.print_answer(*client, "GET", "/v1/nodes", "nodes");
  return s.print_answer(*client, "GET", "/v1/computes/" + s.compute_name + "/status",
                        "compute status");
}

}  // namespace amlnode::agent
