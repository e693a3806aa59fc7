#include "controlplane/request_bodies.h"

#include <algorithm>
#include <cctype>

#include "controlplane/json_fields.h"
#include "controlplane/log_streams.h"
#include "controlplane/tokens.h"
#include "spec/job.h"

namespace amlnode::controlplane {

using spec::RunStatus;

namespace {

// A run id is <experiment>_<unix seconds>_<8 hex> and names a folder on the node and here; a
// folder's name holds at most 255 bytes, so the experiment's name at most 235 (Azure ML allows
// 256).
constexpr std::size_t kMaxExperimentName = 235;
// A run reports at most this many streams with dropped bytes.
constexpr std::size_t kMaxDroppedStreams = 1000;
constexpr std::size_t kMaxComputeName = 64;
constexpr std::size_t kMaxPoolId = 64;
constexpr std::int64_t kMaxTokenUses = 10000;
constexpr std::int64_t kMaxTokenTtlSeconds = 366 * 24 * 3600;
constexpr std::size_t kMaxShortText = 4096;
constexpr std::size_t kMaxReportedRuns = 1024;
constexpr std::size_t kMaxIps = 64;
constexpr std::size_t kMaxLabels = 64;
constexpr std::size_t kMinRegistrationKey = 32;
constexpr std::size_t kMaxRegistrationKey = 128;

Result<std::vector<std::string>> parse_ips(const nlohmann::json& body) {
  std::vector<std::string> ips;
  auto found = body.find("ips");
  if (found == body.end() || found->is_null()) return ips;
  if (!found->is_array() || found->size() > kMaxIps) {
    return invalid_request("ips: expected a list of at most 64 addresses, got " +
                           json_type_name(*found));
  }
  for (std::size_t i = 0; i < found->size(); ++i) {
    const auto& ip = (*found)[i];
    if (!ip.is_string() || ip.get<std::string>().size() > 64) {
      return invalid_request("ips[" + std::to_string(i) + "]: expected an address, got " +
                             json_type_name(ip));
    }
    ips.push_back(ip.get<std::string>());
  }
  return ips;
}

Result<nlohmann::json> parse_labels(const nlohmann::json& body) {
  auto labels = object_field(body, "labels", "labels");
  if (!labels) return labels.error();
  if (!*labels) return nlohmann::json::object();
  if ((*labels)->size() > kMaxLabels) return invalid_request("labels: at most 64 labels");
  for (const auto& [key, value] : (*labels)->items()) {
    if (!value.is_string() || key.size() > 256 || value.get<std::string>().size() > 1024) {
      return invalid_request("labels." + key.substr(0, 64) +
                             ": expected a string of at most 1024 bytes, got " +
                             json_type_name(value));
    }
  }
  return **labels;
}

Result<ReportedRun> parse_reported_run(const nlohmann::json& item, const std::string& path) {
  if (!item.is_object())
    return invalid_request(path + ": expected an object, got " + json_type_name(item));
  auto id = string_field(item, "run_id", path + ".run_id", 512);
  if (!id) return id.error();
  if (!*id) return missing_field(path + ".run_id");
  auto epoch = integer_field(item, "epoch", path + ".epoch", 0, INT64_MAX);
  if (!epoch) return epoch.error();
  auto status = string_field(item, "status", path + ".status", 32);
  if (!status) return status.error();
  return ReportedRun{**id, epoch->value_or(0), status->value_or("")};
}

Result<std::string> required_name(const nlohmann::json& body, const char* field,
                                  std::size_t max_length) {
  auto value = string_field(body, field, field, max_length);
  if (!value) return value.error();
  if (!*value) return missing_field(field);
  if (!is_valid_name(**value, max_length)) {
    return invalid_request(std::string(field) + ": expected 1-" + std::to_string(max_length) +
                           " letters, digits, '_' or '-' starting with a letter or digit, got " +
                           shown(**value));
  }
  return **value;
}

// Optional; when given it must be long enough to be a secret (a node sends 64 hex digits).
Result<std::string> parse_registration_key(const nlohmann::json& body) {
  auto key = string_field(body, "registration_key", "registration_key", kMaxRegistrationKey);
  if (!key) return key.error();
  if (!*key) return std::string();
  bool valid = (*key)->size() >= kMinRegistrationKey;
  for (unsigned char c : **key) valid = valid && (std::isalnum(c) || c == '_' || c == '-');
  if (!valid) {
    return invalid_request(
        "registration_key: expected 32 to 128 letters, digits, '_' or '-', got " +
        std::to_string((*key)->size()) + " characters");
  }
  return **key;
}

}  // namespace

Result<NodeRegistration> parse_registration(std::string_view text) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  NodeRegistration reg;
  auto hostname = string_field(*body, "hostname", "hostname", 255);
  if (!hostname) return hostname.error();
  if (!*hostname || (*hostname)->empty()) return missing_field("hostname");
  reg.hostname = **hostname;
  auto ips = parse_ips(*body);
  if (!ips) return ips.error();
  reg.ips = std::move(*ips);
  struct Count {
    const char* name;
    std::int64_t max;
    std::int64_t fallback;
    std::int64_t* into;
  };
  std::int64_t ssh_port = 0, cpus = 0, gpus = 0;
  for (const Count& count :
       {Count{"ssh_port", 65535, 22, &ssh_port}, Count{"cpus", 1 << 20, 0, &cpus},
        Count{"memory_bytes", std::int64_t{1} << 60, 0, &reg.memory_bytes},
        Count{"gpus", 1 << 16, 0, &gpus}}) {
    auto value = integer_field(*body, count.name, count.name, 0, count.max);
    if (!value) return value.error();
    *count.into = value->value_or(count.fallback);
  }
  reg.ssh_port = static_cast<int>(ssh_port);
  reg.cpus = static_cast<int>(cpus);
  reg.gpus = static_cast<int>(gpus);
  auto labels = parse_labels(*body);
  if (!labels) return labels.error();
  reg.labels = std::move(*labels);
  auto version = string_field(*body, "agent_version", "agent_version", 64);
  if (!version) return version.error();
  reg.agent_version = version->value_or("");
  auto key = parse_registration_key(*body);
  if (!key) return key.error();
  reg.registration_key = std::move(*key);
  return reg;
}

Result<HeartbeatReport> parse_heartbeat(std::string_view text) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  HeartbeatReport report;
  auto state = string_field(*body, "state", "state", 32);
  if (!state) return state.error();
  report.state = state->value_or("idle");
  if (std::find(kNodeStates.begin(), kNodeStates.end(), report.state) == kNodeStates.end()) {
    return invalid_request(
        "state: expected idle, preparing, running, unusable, leaving or preempted, got " +
        shown(report.state));
  }
  auto reason = string_field(*body, "reason", "reason", kMaxShortText);
  if (!reason) return reason.error();
  report.reason = reason->value_or("");
  if (auto deregister = body->find("deregister"); deregister != body->end()) {
    if (!deregister->is_boolean())
      return invalid_request("deregister: expected true or false, got " +
                             json_type_name(*deregister));
    report.deregister = deregister->get<bool>();
    if (report.deregister && report.state != "leaving")
      return invalid_request("deregister: only with state leaving, got " + shown(report.state));
  }
  auto runs = body->find("runs");
  if (runs == body->end() || runs->is_null()) return report;
  if (!runs->is_array() || runs->size() > kMaxReportedRuns) {
    return invalid_request("runs: expected a list of at most 1024 runs, got " +
                           json_type_name(*runs));
  }
  for (std::size_t i = 0; i < runs->size(); ++i) {
    auto run = parse_reported_run((*runs)[i], "runs[" + std::to_string(i) + "]");
    if (!run) return run.error();
    report.runs.push_back(std::move(*run));
  }
  return report;
}

Result<LeaseRequest> parse_lease(std::string_view text, const Limits& limits) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  auto max_runs = integer_field(*body, "max_runs", "max_runs", 1, limits.max_runs_per_lease);
  if (!max_runs) return max_runs.error();
  auto wait = number_field(*body, "wait_seconds", "wait_seconds", 0,
                           static_cast<double>(limits.max_lease_wait.count()));
  if (!wait) return wait.error();
  auto port = integer_field(*body, "rendezvous_port", "rendezvous_port", 1, 65535);
  if (!port) return port.error();
  return LeaseRequest{static_cast<int>(max_runs->value_or(1)), wait->value_or(0),
                      static_cast<int>(port->value_or(6105))};
}

Result<BarrierRequest> parse_barrier(std::string_view text, const Limits& limits) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  auto epoch = integer_field(*body, "epoch", "epoch", 1, INT64_MAX);
  if (!epoch) return epoch.error();
  if (!*epoch) return missing_field("epoch");
  auto wait = number_field(*body, "wait_seconds", "wait_seconds", 0,
                           static_cast<double>(limits.max_lease_wait.count()));
  if (!wait) return wait.error();
  return BarrierRequest{**epoch, wait->value_or(0)};
}

Result<LaunchRequest> parse_launch(std::string_view text) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  auto host = string_field(*body, "host", "host", 253);
  if (!host) return host.error();
  if (!*host || (*host)->empty()) return missing_field("host");
  auto command = string_field(*body, "command", "command", Cluster::kMaxLaunchCommand);
  if (!command) return command.error();
  if (!*command || (*command)->empty()) return missing_field("command");
  auto key = string_field(*body, "key", "key", 64);
  if (!key) return key.error();
  return LaunchRequest{**host, **command, key->value_or("")};
}

Result<LaunchTake> parse_launch_take(std::string_view text, const Limits& limits) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  auto rank = integer_field(*body, "node_rank", "node_rank", 0, wire::kMaxNodeCount - 1);
  if (!rank) return rank.error();
  if (!*rank) return missing_field("node_rank");
  auto wait = number_field(*body, "wait_seconds", "wait_seconds", 0,
                           static_cast<double>(limits.max_lease_wait.count()));
  if (!wait) return wait.error();
  return LaunchTake{static_cast<int>(**rank), wait->value_or(0)};
}

Result<LaunchUpdate> parse_launch_update(std::string_view text) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  auto state_text = string_field(*body, "state", "state", 16);
  if (!state_text) return state_text.error();
  if (!*state_text) return missing_field("state");
  auto state = wire::launch_state_from_string(**state_text);
  if (!state || *state == wire::LaunchState::Pending)
    return invalid_request("state: expected \"running\" or \"exited\", got " + shown(**state_text));
  auto code = integer_field(*body, "exit_code", "exit_code", 0, 255);
  if (!code) return code.error();
  if (*state == wire::LaunchState::Exited && !*code) return missing_field("exit_code");
  LaunchUpdate update{*state, std::nullopt};
  if (*code) update.exit_code = static_cast<int>(**code);
  return update;
}

Result<double> parse_launch_wait(std::string_view text, const Limits& limits) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  auto wait = number_field(*body, "wait_seconds", "wait_seconds", 0,
                           static_cast<double>(limits.max_lease_wait.count()));
  if (!wait) return wait.error();
  return wait->value_or(0);
}

// "dropped_logs": {stream: {"bytes": N, "why": "..."}}, for the streams the control plane has a
// name for; null when absent.
Result<nlohmann::json> parse_dropped_logs(const nlohmann::json& body) {
  auto dropped = object_field(body, "dropped_logs", "dropped_logs");
  if (!dropped) return dropped.error();
  if (!*dropped) return nlohmann::json(nullptr);
  if ((*dropped)->size() > kMaxDroppedStreams)
    return invalid_request("dropped_logs: more than " + std::to_string(kMaxDroppedStreams) +
                           " streams");
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [stream, entry] : (*dropped)->items()) {
    std::string path = "dropped_logs[" + shown(stream) + "]";
    if (stream.size() > kMaxStreamNameBytes) return invalid_request(path + ": not a stream name");
    if (!entry.is_object()) return invalid_request(path + ": expected an object");
    auto bytes = integer_field(entry, "bytes", path + ".bytes", 0, INT64_MAX);
    if (!bytes) return bytes.error();
    auto why = string_field(entry, "why", path + ".why", kMaxShortText);
    if (!why) return why.error();
    out[stream] = {{"bytes", bytes->value_or(0)}, {"why", why->value_or("")}};
  }
  return out;
}

Result<StatusUpdate> parse_status(std::string_view text) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  StatusUpdate update;
  auto epoch = integer_field(*body, "epoch", "epoch", 0, INT64_MAX);
  if (!epoch) return epoch.error();
  if (!*epoch) return missing_field("epoch");
  update.epoch = **epoch;
  auto status_text = string_field(*body, "status", "status", 32);
  if (!status_text) return status_text.error();
  if (!*status_text) return missing_field("status");
  // A node reports the phases it goes through and how a run ended; the other statuses are the
  // server's to set.
  auto status = spec::run_status_from_string(**status_text);
  bool reportable = status && (*status == RunStatus::Preparing || *status == RunStatus::Running ||
                               *status == RunStatus::Finalizing || spec::is_terminal(*status));
  if (!reportable) {
    return invalid_request(
        "status: expected Preparing, Running, Finalizing, Completed, Failed or Canceled, got " +
        shown(**status_text));
  }
  update.report.status = *status;
  auto exit_code = integer_field(*body, "exit_code", "exit_code", INT32_MIN, INT32_MAX);
  if (!exit_code) return exit_code.error();
  if (*exit_code) update.report.exit_code = static_cast<int>(**exit_code);
  auto error = object_field(*body, "error", "error");
  if (!error) return error.error();
  if (*error && dump_json(**error).size() > 4 * kMaxShortText)
    return invalid_request("error: larger than 16 KiB");
  if (*error) update.report.error = **error;
  auto timings = object_field(*body, "timings", "timings");
  if (!timings) return timings.error();
  if (*timings && dump_json(**timings).size() > kMaxShortText)
    return invalid_request("timings: larger than 4 KiB");
  if (*timings) update.report.timings = **timings;
  auto dropped = parse_dropped_logs(*body);
  if (!dropped) return dropped.error();
  update.report.dropped_logs = std::move(*dropped);
  return update;
}

Result<SubmitRequest> parse_submit(std::string_view text, std::size_t max_job_text) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  SubmitRequest request;
  auto job = object_field(*body, "job", "job");
  if (!job) return job.error();
  if (!*job) return missing_field("job");
  auto job_text = string_field(**job, "text", "job.text", max_job_text);
  if (!job_text) return job_text.error();
  if (!*job_text) return missing_field("job.text");
  request.job_text = std::move(**job_text);
  auto file_name = string_field(**job, "file_name", "job.file_name", 255);
  if (!file_name) return file_name.error();
  request.job_file_name = file_name->value_or("job.yml");
  const std::string& name = request.job_file_name;
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
    return invalid_request("job.file_name: expected a file name, got " + shown(name));
  }
  auto experiment = required_name(*body, "experiment_name", kMaxExperimentName);
  if (!experiment) return experiment.error();
  request.experiment_name = std::move(*experiment);
  auto compute = required_name(*body, "compute_name", kMaxComputeName);
  if (!compute) return compute.error();
  request.compute_name = std::move(*compute);
  // The job's node_count, which the submitting client read from the job; the node that leases a
  // share checks it against the job again.
  auto node_count = integer_field(*body, "node_count", "node_count", 1, wire::kMaxNodeCount);
  if (!node_count) return node_count.error();
  request.node_count = static_cast<int>(node_count->value_or(1));
  // {"pool_id": "..."}: the job is an AzureBatchStep's task (pool_id optional).
  auto batch = object_field(*body, "batch_task", "batch_task");
  if (!batch) return batch.error();
  if (*batch) {
    request.batch_task = true;
    auto pool = string_field(**batch, "pool_id", "batch_task.pool_id", kMaxPoolId);
    if (!pool) return pool.error();
    request.batch_pool_id = pool->value_or("");
  }
  return request;
}

Result<std::string> parse_registration_token_lookup(std::string_view text) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  auto token = string_field(*body, "token", "token", 256);
  if (!token) return token.error();
  if (!*token || (*token)->empty()) return missing_field("token");
  return **token;
}

Result<Cluster::TokenRequest> parse_registration_token_request(std::string_view text) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  Cluster::TokenRequest request;
  if (body->contains("compute_name") && !(*body)["compute_name"].is_null()) {
    auto name = required_name(*body, "compute_name", kMaxComputeName);
    if (!name) return name.error();
    request.compute_name = std::move(*name);
  }
  // A join token: many nodes, for a while (kubeadm's and k3s's tokens).
  auto uses = integer_field(*body, "uses", "uses", 1, kMaxTokenUses);
  if (!uses) return uses.error();
  request.max_uses = uses->value_or(1);
  auto ttl = integer_field(*body, "ttl_seconds", "ttl_seconds", 60, kMaxTokenTtlSeconds);
  if (!ttl) return ttl.error();
  if (*ttl) request.ttl = std::chrono::seconds(**ttl);
  return request;
}

}  // namespace amlnode::controlplane
