#pragma once

// The node's side of docs/protocol.md: one call per endpoint the agent uses. Calls block (they are
// made on the daemon's worker pool), and every failure is a Result error with one of these codes:
//
//   Unreachable   the server could not be reached or did not answer in time: retry later
//   StaleEpoch    409 with "stop": the run's lease moved on; stop the run and drop it
//   OffsetAhead   a log chunk started past the server's length; `Error::message` is not used for
//                 that: LogAppend.server_length carries the length to resend from
//   Unauthorized  401: the token is wrong (a spent registration token, a forgotten node)
//   Forbidden     403: the run is not leased to this node
//   Rejected      any other 4xx/5xx, with the server's code and message
//   BadAnswer     a 2xx answer that is not what the protocol says
//   Canceled      the client was shut down

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agent/daemon/http_client.h"
#include "common/result.h"
#include "spec/wire.h"

namespace amlnode::agent {

// What a node tells the control plane about itself when it registers.
struct NodeFacts {
  std::string hostname;
  std::vector<std::string> ips;
  int ssh_port = 22;
  int cpus = 0;
  std::uint64_t memory_bytes = 0;
  int gpus = 0;
  std::map<std::string, std::string> labels;  // compute_name, vm_size, vm_priority, ...
  std::string agent_version;
};

struct NodeIdentity {
  std::string node_id;
  std::string node_token;
};

struct Registration {
  NodeIdentity identity;
  std::chrono::seconds heartbeat_interval{5};
  std::chrono::seconds heartbeat_timeout{30};
};

// The bodies the control plane also handles (spec/wire.h), under the names the agent uses.
using HeldRun = wire::HeldRun;
using HeartbeatReport = wire::HeartbeatReport;
using Command = wire::Command;
using LeasedRun = wire::LeasedRun;

struct HeartbeatAnswer {
  std::chrono::seconds heartbeat_interval{5};
  std::vector<Command> commands;
  // The node asked to leave for good, and the control plane removed it.
  bool removed = false;
};

struct StatusReport {
  std::string run_id;
  std::int64_t epoch = 0;
  std::string status;
  std::optional<int> exit_code;
  std::optional<Error> error;
  nlohmann::json timings = nlohmann::json::object();
  // With a terminal status: {stream: {"bytes", "why"}} of the log bytes not delivered.
  nlohmann::json dropped_logs = nlohmann::json::object();
};

struct LogAppend {
  std::uint64_t server_length = 0;  // the stream's length at the server after the call
  bool accepted = true;             // false: the chunk started past server_length; resend from it
};

class ControlPlaneClient {
 public:
  virtual ~ControlPlaneClient() = default;

  // `registration_key` is the node's stored secret (see StateStore::registration_key): the same
  // token with the same key answers the same identity again, so a registration whose answer was
  // lost can simply be repeated. "" registers without one (the token then works exactly once).
  virtual Result<Registration> register_node(const std::string& registration_token,
                                             const NodeFacts& facts,
                                             const std::string& registration_key) = 0;
  virtual Result<HeartbeatAnswer> heartbeat(const NodeIdentity& node,
                                            const HeartbeatReport& report) = 0;
  // Long poll: answers an empty list after `wait` when there is nothing to run.
  // `rendezvous_port` is the port this node would give a run across nodes it became master of.
  virtual Result<std::vector<LeasedRun>> lease(const NodeIdentity& node, int max_runs,
                                               std::chrono::seconds wait, int rendezvous_port) = 0;
  // A share of a run across nodes is prepared: whether every share now is (a long poll of `wait`).
  virtual Result<bool> wait_at_barrier(const NodeIdentity& node, const std::string& run_id,
                                       std::int64_t epoch, std::chrono::seconds wait) = 0;
  // Streams the snapshot into `destination` (at most `max_bytes`).
  virtual Result<void> download_snapshot(const NodeIdentity& node, const std::string& run_id,
                                         std::int64_t epoch,
                                         const std::filesystem::path& destination,
                                         std::uint64_t max_bytes) = 0;
  // The status the server holds after the call (it may be further along than the report).
  virtual Result<std::string> report_status(const NodeIdentity& node,
                                            const StatusReport& report) = 0;
  // `bytes` is sent from the caller's buffer, which the log shipper reuses from chunk to chunk.
  virtual Result<LogAppend> append_log(const NodeIdentity& node, const std::string& run_id,
                                       std::int64_t epoch, const std::string& stream,
                                       std::uint64_t offset, std::string_view bytes) = 0;
  virtual Result<void> upload_outputs(const NodeIdentity& node, const std::string& run_id,
                                      std::int64_t epoch, std::string tar_gz) = 0;
  // Ends calls in flight and refuses later ones ("Canceled"): the daemon is stopping.
  virtual void shut_down() = 0;
};

// The calls of a run's daemon launches (MPI across nodes, docs/protocol.md "Daemon launches"),
// made with the launch token of the run's epoch by `amlnode mpi-rsh` and `amlnode mpi-host`.
// Errors as ControlPlaneClient's.
struct TakenLaunch {
  int id = 0;
  std::string command;  // a shell command line, as Open MPI gives its rsh agent
};
class LaunchClient {
 public:
  virtual ~LaunchClient() = default;
  // The launch's id. `key` names this launch, so asking again after a lost answer adds no other.
  virtual Result<int> add_launch(const std::string& host, const std::string& command,
                                 const std::string& key) = 0;
  // Long poll: a launch for this node rank, now marked running; nullopt after `wait`.
  virtual Result<std::optional<TakenLaunch>> take_launch(int node_rank,
                                                         std::chrono::seconds wait) = 0;
  virtual Result<void> report_launch(int id, wire::LaunchState state,
                                     std::optional<int> exit_code) = 0;
  // Long poll: the launch's exit code once it exited; nullopt while it still runs after `wait`.
  virtual Result<std::optional<int>> wait_for_launch(int id, std::chrono::seconds wait) = 0;
};

std::unique_ptr<LaunchClient> make_http_launch_client(std::unique_ptr<HttpClient> http,
                                                      std::string run_id, std::string token);

std::unique_ptr<ControlPlaneClient> make_http_control_plane_client(
    std::unique_ptr<HttpClient> http);

// Log stream names go into the URL path; their '/' stay, everything else outside
// [A-Za-z0-9._~-] is percent-encoded.
std::string encode_stream_path(const std::string& stream);

}  // namespace amlnode::agent
