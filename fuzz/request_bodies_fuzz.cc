// Fuzzes the control plane's parsing of what nodes and users send (controlplane/request_bodies.h):
// registration, heartbeat, lease (and barrier), status, submit and registration-token bodies, the
// log stream names of PUT .../logs/{stream}, and, on the node's side, the readers of the control
// plane's answers (spec/wire.h), shares of runs across nodes included. The first byte of the input
// picks the parser; the rest is the body.
//
// Beyond not crashing, each parser must keep its promises: a refused body is an InvalidRequest
// whose answer can be serialised, an accepted one holds only values within the documented limits,
// and what the server then answers about it (the node or run record) serialises without throwing.

#include <algorithm>
#include <cstdint>
#include <string>

#include "common/json.h"
#include "controlplane/cluster.h"
#include "controlplane/json_fields.h"
#include "controlplane/log_streams.h"
#include "controlplane/request_bodies.h"
#include "controlplane/tokens.h"
#include "fuzz/fuzz_support.h"
#include "spec/wire.h"

namespace {

using namespace amlnode::controlplane;
namespace wire = amlnode::wire;
using amlnode::fuzz::check;
using nlohmann::json;

// A refusal is always a 400 whose answer names the field; the answer must serialise (the message
// may quote invalid UTF-8 a client sent, cut in the middle of a character).
template <class T>
bool refused(const amlnode::Result<T>& parsed) {
  if (parsed.ok()) return false;
  check(parsed.error().code == kInvalidRequest, "a refusal that is not InvalidRequest");
  check(!parsed.error().message.empty(), "a refusal without a message");
  (void)dump_json(
      {{"error", {{"code", parsed.error().code}, {"message", parsed.error().message}}}});
  return true;
}

void registration(std::string_view body) {
  auto parsed = parse_registration(body);
  if (refused(parsed)) return;
  const NodeRegistration& reg = *parsed;
  check(!reg.hostname.empty() && reg.hostname.size() <= 255, "hostname out of bounds");
  check(reg.ips.size() <= 64, "more than 64 addresses");
  check(reg.ssh_port >= 0 && reg.ssh_port <= 65535, "ssh_port out of range");
  check(reg.cpus >= 0 && reg.gpus >= 0 && reg.memory_bytes >= 0, "a negative count");
  check(reg.labels.is_object() && reg.labels.size() <= 64, "labels out of bounds");
  check(reg.registration_key.empty() || reg.registration_key.size() >= 32,
        "a registration key shorter than 32 characters");
  NodeRecord record;
  record.hostname = reg.hostname;
  record.ips = reg.ips;
  record.ssh_port = reg.ssh_port;
  record.cpus = reg.cpus;
  record.memory_bytes = reg.memory_bytes;
  record.gpus = reg.gpus;
  record.labels = reg.labels;
  record.agent_version = reg.agent_version;
  (void)dump_json(Cluster::node_json(record));
}

void heartbeat(std::string_view body) {
  auto parsed = parse_heartbeat(body);
  if (refused(parsed)) return;
  check(std::find(kNodeStates.begin(), kNodeStates.end(), parsed->state) != kNodeStates.end(),
        "a heartbeat state that is not a node state");
  check(parsed->runs.size() <= 1024, "more than 1024 runs");
  // What the agent sends (wire::heartbeat_body) and what the server reads must agree.
  auto again = parse_heartbeat(dump_json(amlnode::wire::heartbeat_body(*parsed)));
  check(again.ok(), "a heartbeat the server accepted does not parse back from heartbeat_body");
  check(again->state == parsed->state && again->reason == parsed->reason &&
            again->runs.size() == parsed->runs.size(),
        "a heartbeat changed through heartbeat_body");
  for (std::size_t i = 0; i < parsed->runs.size(); ++i) {
    const auto& a = parsed->runs[i];
    const auto& b = again->runs[i];
    check(a.run_id == b.run_id && a.epoch == b.epoch && a.status == b.status,
          "a heartbeat's run changed through heartbeat_body");
  }
}

// The bodies of a run's daemon launches (the same bytes as each).
void launches(std::string_view body, const Limits& limits) {
  if (auto launch = parse_launch(body); !refused(launch))
    check(!launch->host.empty() && launch->host.size() <= 253 && !launch->command.empty() &&
              launch->command.size() <= Cluster::kMaxLaunchCommand,
          "a launch's host or command out of range");
  if (auto take = parse_launch_take(body, limits); !refused(take))
    check(take->node_rank >= 0 && take->node_rank < wire::kMaxNodeCount &&
              take->wait_seconds >= 0 &&
              take->wait_seconds <= static_cast<double>(limits.max_lease_wait.count()),
          "a launch take out of range");
  if (auto update = parse_launch_update(body); !refused(update))
    check(update->state != wire::LaunchState::Pending &&
              (update->state != wire::LaunchState::Exited || update->exit_code.has_value()),
          "a launch update without a state it may take");
  if (auto wait = parse_launch_wait(body, limits); !refused(wait))
    check(*wait >= 0 && *wait <= static_cast<double>(limits.max_lease_wait.count()),
          "a launch wait out of range");
}

// A lease body, and the same bytes as a barrier body and the launch bodies (a node's long polls).
void lease(std::string_view body) {
  Limits limits;
  launches(body, limits);
  auto barrier = parse_barrier(body, limits);
  if (!refused(barrier)) {
    check(barrier->epoch >= 1, "a barrier epoch below 1");
    check(barrier->wait_seconds >= 0 &&
              barrier->wait_seconds <= static_cast<double>(limits.max_lease_wait.count()),
          "a barrier's wait_seconds out of range");
  }
  auto parsed = parse_lease(body, limits);
  if (refused(parsed)) return;
  check(parsed->max_runs >= 1 && parsed->max_runs <= limits.max_runs_per_lease,
        "max_runs out of range");
  check(parsed->wait_seconds >= 0 &&
            parsed->wait_seconds <= static_cast<double>(limits.max_lease_wait.count()),
        "wait_seconds out of range");
  check(parsed->rendezvous_port >= 1 && parsed->rendezvous_port <= 65535,
        "rendezvous_port out of range");
}

void status(std::string_view body) {
  auto parsed = parse_status(body);
  if (refused(parsed)) return;
  check(parsed->epoch >= 0, "a negative epoch");
  RunRecord run;
  run.epoch = parsed->epoch;
  run.status = parsed->report.status;
  run.exit_code = parsed->report.exit_code;
  run.error = parsed->report.error;
  run.timings = parsed->report.timings;
  if (parsed->report.dropped_logs.is_object()) run.dropped_logs = parsed->report.dropped_logs;
  check(run.dropped_logs.size() <= 1000, "more than 1000 streams with dropped bytes");
  (void)dump_json(Cluster::run_json(run));
}

void submit(std::string_view body) {
  constexpr std::size_t kMaxJobText = 64 << 10;
  auto parsed = parse_submit(body, kMaxJobText);
  if (refused(parsed)) return;
  check(parsed->job_text.size() <= kMaxJobText, "job text over the limit");
  const std::string& name = parsed->job_file_name;
  check(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..",
        "a job file name that is not a file name");
  check(is_valid_name(parsed->experiment_name, 235), "an invalid experiment name");
  check(is_valid_name(parsed->compute_name, 64), "an invalid compute name");
  check(parsed->node_count >= 1 && parsed->node_count <= amlnode::wire::kMaxNodeCount,
        "node_count out of range");
}

void registration_token(std::string_view body) {
  auto parsed = parse_registration_token_request(body);
  if (refused(parsed)) return;
  check(parsed->compute_name.empty() || is_valid_name(parsed->compute_name, 64),
        "an invalid compute name");
  check(parsed->max_uses >= 1 && parsed->max_uses <= 10000, "uses out of range");
}

// A valid stream name becomes a file below the run's logs folder: it must not be able to climb.
void stream_name(std::string_view name) {
  if (!is_valid_stream_name(name)) return;
  check(name.size() <= kMaxStreamNameBytes, "a stream name over the limit");
  check(name.front() != '/' && name.find("/../") == std::string_view::npos &&
            !name.ends_with("/..") && name.find('\0') == std::string_view::npos,
        "a stream name that could climb out of its folder");
}

// The node's readers of the control plane's answers: a lease answer's runs and a heartbeat
// answer's commands.
void answers(std::string_view body) {
  json value = amlnode::parse_untrusted_json(body);
  if (value.is_discarded()) return;
  for (const auto& command : amlnode::wire::commands_from_json(value)) {
    (void)dump_json(amlnode::wire::command_json(command));
  }
  auto run = amlnode::wire::leased_run_from_json(value);
  if (!run.ok()) return;
  auto again = amlnode::wire::leased_run_from_json(amlnode::wire::leased_run_json(*run));
  check(again.ok() && again->run_id == run->run_id && again->epoch == run->epoch &&
            again->job_text == run->job_text && again->job_file_name == run->job_file_name &&
            again->experiment_name == run->experiment_name,
        "a leased run changed through leased_run_json");
  // A share of a run across nodes holds together: its rank within the count, a node per rank.
  check(run->node_count >= 1 && run->node_count <= amlnode::wire::kMaxNodeCount,
        "a share's node_count out of range");
  check(run->node_count == 1 || (run->node_rank >= 0 && run->node_rank < run->node_count &&
                                 static_cast<int>(run->nodes.size()) == run->node_count),
        "a share whose rank or nodes do not match its node_count");
  check(run->master_port >= 1 && run->master_port <= 65535, "a share's master_port out of range");
  check(again->node_rank == run->node_rank && again->node_count == run->node_count &&
            again->master_port == run->master_port && again->nodes.size() == run->nodes.size(),
        "a share changed through leased_run_json");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view body = amlnode::fuzz::as_text(data + 1, size - 1);
  switch (data[0] % 8) {
    case 0:
      registration(body);
      break;
    case 1:
      heartbeat(body);
      break;
    case 2:
      lease(body);
      break;
    case 3:
      status(body);
      break;
    case 4:
      submit(body);
      break;
    case 5:
      registration_token(body);
      break;
    case 6:
      stream_name(body);
      break;
    default:
      answers(body);
      break;
  }
  return 0;
}
