#include "agent/user_commands.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "agent/user_client.h"
#include "common/format.h"
#include "common/json.h"

namespace amlnode::agent {

using nlohmann::json;

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

// One line per metric name: its kind, how many values, the last one and its step.
std::string series_text(const json& metrics, const std::string& indent) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%s%-32s %-7s %7s  %s\n", indent.c_str(), "NAME", "KIND",
                "COUNT", "LAST");
  out += line;
  for (const auto& [name, entry] : metrics.items()) {
    const json& last = entry.value("last", json::object());
    std::string value = last.contains("value")    ? last["value"].dump()
                        : last.contains("values") ? last["values"].dump()
                                                  : last.value("row", json::object()).dump();
    if (last.contains("step")) value += " (step " + last["step"].dump() + ")";
    std::snprintf(line, sizeof line, "%s%-32s %-7s %7llu  %.300s\n", indent.c_str(), name.c_str(),
                  entry.value("kind", "").c_str(),
                  static_cast<unsigned long long>(entry.value("count", 0ull)), value.c_str());
    out += line;
  }
  return out;
}

// The run's own series, then each child run's (run.create_children), then the last resource
// sample.
std::string metrics_text(const json& body) {
  std::string out;
  const json& metrics = body.value("metrics", json::object());
  const json& children = body.value("children", json::object());
  char line[512];
  if (metrics.empty() && children.empty()) out += "no metrics logged\n";
  if (!metrics.empty()) out += series_text(metrics, "");
  for (const auto& [child, series] : children.items()) {
    out += "child run " + printable(child) + ":\n";
    out += series_text(series, "  ");
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
  std::optional<std::string> job_option;
  std::vector<std::string> submit_words;
  std::string compute;
  std::string experiment;
  std::string source_dir;
  std::string run_id;
  std::string stream;  // empty: the run's main log (user_client.h)
  std::string compute_name;
  std::string pool_id;
  std::string account_name;
  // compute create / update (AmlCompute.provisioning_configuration, update)
  std::string vm_size;
  std::string vm_priority;
  std::optional<std::int64_t> min_nodes;
  std::optional<std::int64_t> max_nodes;
  std::optional<std::int64_t> idle_seconds;
  std::optional<std::string> description;
  // compute token create / revoke
  std::optional<std::int64_t> token_uses;
  std::optional<std::int64_t> token_ttl;
  std::string token_id;
  unsigned attempt = 0;  // 0: the current attempt
  unsigned limit = 20;   // runs listed
  bool live_only = false;
  bool follow = false;
  bool as_json = false;
  CLI::App *submit = nullptr, *status = nullptr, *logs = nullptr, *cancel = nullptr,
           *nodes = nullptr, *compute_status = nullptr, *metrics = nullptr, *runs = nullptr,
           *token_create = nullptr, *attach_batch = nullptr, *compute_detach = nullptr,
           *compute_list = nullptr, *compute_show = nullptr, *compute_create = nullptr,
           *compute_update = nullptr, *compute_delete = nullptr, *token_list = nullptr,
           *token_revoke = nullptr;

  Result<UserClient> client() const {
    return make_user_client(UserAccess{control_plane, user_token, user_token_file, ca_file});
  }

  int run_submit(UserClient& client) const {
    std::vector<std::string> rest = submit_words;
    SubmitRequest request{job_option.value_or(""), compute, experiment, source_dir, {}, {}};
    if (!job_option) {
      if (rest.empty()) {
        std::fprintf(stderr, "amlnode submit: the job file is required (JOB, or -c JOB)\n");
        return kExitUsage;
      }
      request.job_file = rest.front();
      rest.erase(rest.begin());
    }
    if (!rest.empty()) {
      request.script = rest.front();
      request.arguments.assign(rest.begin() + 1, rest.end());
    }
    bool invalid = false;
    auto id = submit_job(client, request, &invalid);
    if (!id) return invalid ? kExitUsage : kExitFailed;
    std::printf("%s\n", id->c_str());
    return 0;
  }

  int run_logs(UserClient& client) const {
    return print_log(client, LogRequest{run_id, stream, attempt, follow});
  }

  int print_answer(UserClient& client, const std::string& method, const std::string& target,
                   const std::string& what) const {
    auto response = client.call(method, target, method == "GET" ? "" : "{}");
    if (!answered(response, what)) return kExitFailed;
    auto body = parse_untrusted_json(response->body);
    std::printf("%s\n",
                body.is_discarded() ? response->body.c_str() : body.dump(as_json ? -1 : 2).c_str());
    return 0;
  }

  // The run record with its last resource sample ("resources", null before the first one).
  int run_status(UserClient& client) const {
    auto run = client.call("GET", "/v1/runs/" + url_path_escape(run_id));
    if (!answered(run, "status")) return kExitFailed;
    auto body = parse_untrusted_json(run->body);
    if (body.is_discarded()) return fail(Error{"BadAnswer", "status: the answer is not JSON"});
    auto metrics = client.call("GET", "/v1/runs/" + url_path_escape(run_id) + "/metrics");
    if (metrics.ok() && metrics->status == 200) {
      auto answer = parse_untrusted_json(metrics->body);
      if (answer.is_object()) body["resources"] = answer.value("resources", json(nullptr));
    }
    if (auto progress = parallel_progress(client); !progress.empty()) body["progress"] = progress;
    std::printf("%s\n", body.dump(as_json ? -1 : 2).c_str());
    return 0;
  }

  // A ParallelRunStep's progress: the last line of its newest logs/job_progress_overview.*.txt
  // stream ("" for any other run, or before its first line arrived).
  std::string parallel_progress(UserClient& client) const {
    const std::string base = "/v1/runs/" + url_path_escape(run_id) + "/logs";
    auto listed = client.call("GET", base);
    if (!listed.ok() || listed->status != 200) return "";
    auto answer = parse_untrusted_json(listed->body);
    if (!answer.is_object() || !answer["streams"].is_object()) return "";
    std::string newest;
    std::uint64_t length = 0;
    for (const auto& [name, size] : answer["streams"].items()) {
      if (name.starts_with("logs/job_progress_overview.") && name > newest &&
          size.is_number_unsigned()) {
        newest = name;
        length = size.get<std::uint64_t>();
      }
    }
    if (newest.empty()) return "";
    std::uint64_t from = length > 4096 ? length - 4096 : 0;
    auto tail = client.call(
        "GET", base + "/" + url_path_escape(newest, true) + "?offset=" + std::to_string(from));
    if (!tail.ok() || tail->status != 200) return "";
    // Logs ship as they are read, not by line: an unfinished last line is left out.
    std::string text = tail->body;
    auto end = text.rfind('\n');
    if (end == std::string::npos) return "";
    text.resize(end);
    return text.substr(text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1);
  }

  int run_metrics(UserClient& client) const {
    auto response = client.call("GET", "/v1/runs/" + url_path_escape(run_id) + "/metrics");
    if (!answered(response, "metrics")) return kExitFailed;
    auto body = parse_untrusted_json(response->body);
    if (body.is_discarded()) return fail(Error{"BadAnswer", "metrics: the answer is not JSON"});
    std::string text = as_json ? body.dump() : metrics_text(body);
    std::fwrite(text.data(), 1, text.size(), stdout);
    if (as_json) std::printf("\n");
    return 0;
  }

  // `amlnode runs`: one line per run, newest first.
  int run_list(UserClient& client) const {
    std::string target = "/v1/runs?limit=" + std::to_string(limit);
    if (live_only) target += "&live=true";
    if (!compute.empty()) target += "&compute=" + url_path_escape(compute);
    auto response = client.call("GET", target);
    if (!answered(response, "runs")) return kExitFailed;
    auto body = parse_untrusted_json(response->body);
    if (!body.is_object() || !body["runs"].is_array())
      return fail(Error{"BadAnswer", "runs: the answer is not a list of runs"});
    if (as_json) {
      std::printf("%s\n", body["runs"].dump().c_str());
      return 0;
    }
    std::printf("%-44s %-15s %-16s %-20s %s\n", "RUN_ID", "STATUS", "COMPUTE", "CREATED", "NODE");
    for (const auto& run : body["runs"]) {
      auto text = [&run](const char* key) {
        return run.contains(key) && run[key].is_string() ? run[key].get<std::string>() : "-";
      };
      std::printf("%-44s %-15s %-16s %-20.19s %s\n", text("run_id").c_str(), text("status").c_str(),
                  text("compute_name").c_str(), text("created_utc").c_str(),
                  text("node_id").c_str());
    }
    return 0;
  }

  int run_token_create(UserClient& client) const {
    json request = {{"compute_name", compute_name}};
    if (token_uses) request["uses"] = *token_uses;
    if (token_ttl) request["ttl_seconds"] = *token_ttl;
    auto made = client.call("POST", "/v1/registration-tokens", request.dump());
    if (!answered(made, "token create")) return kExitFailed;
    auto body = parse_untrusted_json(made->body);
    if (!body.is_object() || !body["token"].is_string())
      return fail(Error{"BadAnswer", "token create: the answer holds no token"});
    std::printf("%s\n", as_json ? body.dump().c_str() : body["token"].get<std::string>().c_str());
    return 0;
  }

  // `amlnode compute attach-batch NAME --pool-id P`: the pool becomes a compute its nodes join.
  int run_attach_batch(UserClient& client) const {
    json body = {{"kind", "batch"}, {"pool_id", pool_id}};
    if (!account_name.empty()) body["account_name"] = account_name;
    return print_answer_with(client, "PUT", compute_target(), body.dump(), "compute attach-batch");
  }

  std::string compute_target() const { return "/v1/computes/" + url_path_escape(compute_name); }

  // `amlnode compute create NAME ...`: the SDK's defaults are the control plane's to fill in.
  int run_compute_create(UserClient& client) const {
    json body = {{"kind", "amlcompute"}};
    if (!vm_size.empty()) body["vm_size"] = vm_size;
    if (!vm_priority.empty()) body["vm_priority"] = vm_priority;
    add_scale_settings(body);
    if (description) body["description"] = *description;
    return print_answer_with(client, "PUT", compute_target(), body.dump(), "compute create");
  }

  int run_compute_update(UserClient& client) const {
    json body = json::object();
    add_scale_settings(body);
    return print_answer_with(client, "PATCH", compute_target(), body.dump(), "compute update");
  }

  void add_scale_settings(json& body) const {
    if (min_nodes) body["min_nodes"] = *min_nodes;
    if (max_nodes) body["max_nodes"] = *max_nodes;
    if (idle_seconds) body["idle_seconds_before_scaledown"] = *idle_seconds;
  }

  int print_answer_with(UserClient& client, const std::string& method, const std::string& target,
                        const std::string& body, const std::string& what) const {
    auto response = client.call(method, target, body);
    if (!answered(response, what)) return kExitFailed;
    auto answer = parse_untrusted_json(response->body);
    std::printf("%s\n", answer.is_discarded() ? response->body.c_str()
                                              : answer.dump(as_json ? -1 : 2).c_str());
    return 0;
  }

  static int fail(const Error& error) {
    std::fprintf(stderr, "amlnode: %s\n", error.message.c_str());
    return kExitFailed;
  }
};

UserCommands::UserCommands() : state_(std::make_unique<State>()) {}

void UserCommands::set_submit_words(std::vector<std::string> words) {
  state_->submit_words = std::move(words);
}
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
  s.submit = app.add_subcommand(
      "submit",
      "Submit a job to a control plane; prints the run id: amlnode submit [options] JOB [SCRIPT "
      "ARGS...]");
  s.submit->add_option("-c,--job", s.job_option,
                       "the job file; then the words after the options are SCRIPT ARGS...");
  s.submit->add_option("--compute", s.compute, "compute (cluster) name")->required();
  s.submit->add_option("-e,--experiment", s.experiment, "experiment name (default: the job's)");
  s.submit->add_option("--source-dir", s.source_dir, "source directory, overriding the job file");
  s.status = app.add_subcommand("status", "Show a run");
  s.status->add_option("RUN_ID", s.run_id)->required();
  s.logs = app.add_subcommand("logs", "Print a run's log");
  s.logs->add_option("RUN_ID", s.run_id)->required();
  s.logs
      ->add_option("--stream", s.stream,
                   "the stream (default: user_logs/std_log.txt, or rank 0's "
                   "user_logs/std_log_process_00.txt; system_logs/..., logs/...)")
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
  s.runs = app.add_subcommand("runs", "List runs, newest first");
  s.runs->add_flag("--live", s.live_only, "only runs that have not ended");
  s.runs->add_option("--compute", s.compute, "only this compute's runs");
  s.runs->add_option("--limit", s.limit, "at most this many")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  s.nodes = app.add_subcommand("nodes", "List the nodes (AmlCompute list_nodes)");
  auto* compute = app.add_subcommand("compute", "Compute (cluster) commands");
  s.compute_status = compute->add_subcommand("status", "Node counts by state");
  s.compute_status->add_option("NAME", s.compute_name)->required();
  auto* token = compute->add_subcommand("token", "Registration tokens for a compute's nodes");
  s.token_create = token->add_subcommand(
      "create",
      "Make a registration token for the compute's nodes (single-use unless --uses); prints it");
  s.token_create->add_option("NAME", s.compute_name)->required();
  s.token_create
      ->add_option("--uses", s.token_uses,
                   "how many nodes may register with it (a join token for a scale set)")
      ->check(CLI::Range(1, 10000));
  s.token_create
      ->add_option("--ttl", s.token_ttl, "seconds it may be used for (default: no expiry)")
      ->check(CLI::Range(60, 366 * 24 * 3600));
  s.token_list = token->add_subcommand("list", "List the compute's tokens (never their secrets)");
  s.token_list->add_option("NAME", s.compute_name)->required();
  s.token_revoke = token->add_subcommand(
      "revoke", "Revoke a token by its id: no node registers with it any more");
  s.token_revoke->add_option("TOKEN_ID", s.token_id)->required();
  s.attach_batch = compute->add_subcommand(
      "attach-batch",
      "Attach an Azure Batch pool as a compute (BatchCompute); its nodes run AzureBatchStep tasks");
  s.attach_batch->add_option("NAME", s.compute_name)->required();
  s.attach_batch->add_option("--pool-id", s.pool_id, "the Batch pool's id")->required();
  s.attach_batch->add_option("--account-name", s.account_name,
                             "the Batch account's name (AZ_BATCH_ACCOUNT_NAME; default: NAME)");
  s.compute_create = compute->add_subcommand(
      "create", "Create a cluster (AmlCompute): its VM size and priority, and how it scales");
  s.compute_update = compute->add_subcommand("update", "Change a cluster's scale settings");
  for (auto* command : {s.compute_create, s.compute_update}) {
    command->add_option("NAME", s.compute_name)->required();
    command->add_option("--min-nodes", s.min_nodes, "nodes kept however idle (default 0)")
        ->check(CLI::Range(0, 10000));
    command->add_option("--max-nodes", s.max_nodes, "nodes at most (default 4)")
        ->check(CLI::Range(1, 10000));
    command
        ->add_option("--idle-seconds-before-scaledown", s.idle_seconds,
                     "how long a node idles before it is let go (default 1800)")
        ->check(CLI::Range(0, 30 * 24 * 3600));
  }
  s.compute_create->add_option("--vm-size", s.vm_size, "the VM size (default Standard_NC6)");
  s.compute_create->add_option("--vm-priority", s.vm_priority, "dedicated (default) or lowpriority")
      ->check(CLI::IsMember({"dedicated", "lowpriority"}));
  s.compute_create->add_option("--description", s.description, "what the cluster is for");
  s.compute_delete = compute->add_subcommand(
      "delete", "Delete a cluster; refused while nodes are in it (attached computes: detach)");
  s.compute_delete->add_option("NAME", s.compute_name)->required();
  s.compute_detach = compute->add_subcommand(
      "detach", "Forget an attached compute; the pool and its nodes are left as they are");
  s.compute_detach->add_option("NAME", s.compute_name)->required();
  s.compute_list = compute->add_subcommand("list", "List the computes with a record");
  s.compute_show = compute->add_subcommand("show", "Show a compute's record");
  s.compute_show->add_option("NAME", s.compute_name)->required();
  for (auto* command :
       {s.submit, s.status, s.logs, s.cancel, s.nodes, s.compute_status, s.metrics, s.runs,
        s.token_create, s.attach_batch, s.compute_detach, s.compute_list, s.compute_show,
        s.compute_create, s.compute_update, s.compute_delete, s.token_list, s.token_revoke})
    common(command);
}

int UserCommands::run() {
  State& s = *state_;
  bool chosen = *s.submit || *s.status || *s.logs || *s.cancel || *s.nodes || *s.compute_status ||
                *s.metrics || *s.runs || *s.token_create || *s.attach_batch || *s.compute_detach ||
                *s.compute_list || *s.compute_show || *s.compute_create || *s.compute_update ||
                *s.compute_delete || *s.token_list || *s.token_revoke;
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
  if (*s.runs) return s.run_list(*client);
  if (*s.token_create) return s.run_token_create(*client);
  if (*s.token_list)
    return s.print_answer(*client, "GET",
                          "/v1/registration-tokens?compute=" + url_path_escape(s.compute_name),
                          "token list");
  if (*s.token_revoke)
    return s.print_answer_with(*client, "DELETE",
                               "/v1/registration-tokens/" + url_path_escape(s.token_id), "",
                               "token revoke");
  if (*s.attach_batch) return s.run_attach_batch(*client);
  if (*s.compute_detach)
    return s.print_answer_with(*client, "DELETE", s.compute_target() + "?action=detach", "",
                               "compute detach");
  if (*s.compute_delete)
    return s.print_answer_with(*client, "DELETE", s.compute_target() + "?action=delete", "",
                               "compute delete");
  if (*s.compute_create) return s.run_compute_create(*client);
  if (*s.compute_update) return s.run_compute_update(*client);
  if (*s.compute_list) return s.print_answer(*client, "GET", "/v1/computes", "compute list");
  if (*s.compute_show) return s.print_answer(*client, "GET", s.compute_target(), "compute show");
  if (*s.cancel)
    return s.print_answer(*client, "POST", "/v1/runs/" + url_path_escape(s.run_id) + "/cancel",
                          "cancel");
  if (*s.nodes) return s.print_answer(*client, "GET", "/v1/nodes", "nodes");
  return s.print_answer(*client, "GET",
                        "/v1/computes/" + url_path_escape(s.compute_name) + "/status",
                        "compute status");
}

}  // namespace amlnode::agent
