#pragma once

// The bodies of docs/protocol.md that the agent and the control plane both handle: one declaration
// of each and one encoder, so that the two sides cannot drift apart. The sender encodes with the
// functions here; the agent reads the control plane's answers with the lenient readers here (a
// field it does not know is ignored, so a newer server can add some). The control plane's strict,
// field-by-field checking of what nodes send stays in controlplane/request_bodies.cc, since only
// it must name the bad field of a request it refuses.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace amlnode::wire {

// What a heartbeat's `state` may be.
inline const std::vector<std::string> kNodeStates = {"idle",     "running", "preparing",
                                                     "unusable", "leaving", "preempted"};

// A run a node holds, as its heartbeat reports it.
struct HeldRun {
  std::string run_id;
  std::int64_t epoch = 0;
  std::string status;
};

// POST /v1/nodes/{id}/heartbeat.
struct HeartbeatReport {
  std::string state;   // one of kNodeStates
  std::string reason;  // why, when unusable; "" otherwise
  std::vector<HeldRun> runs;
  // With state "leaving": the node goes for good (told to leave by a scale-down, or an agent
  // started with --ephemeral that has had its run). The control plane removes it once it holds
  // nothing; its identity opens nothing afterwards.
  bool deregister = false;
};

// The types of a heartbeat answer's commands.
inline constexpr const char* kCommandCancel = "cancel";  // cancel run_id
inline constexpr const char* kCommandStop = "stop";      // stop run_id here: its lease moved on
inline constexpr const char* kCommandDrain = "drain";    // take no new runs
// Take no new runs, then leave for good (a scale-down): drain, say `leaving` with deregister,
// and exit 0 so that whatever runs the VM may delete it.
inline constexpr const char* kCommandLeave = "leave";

// One of a heartbeat answer's `commands`.
struct Command {
  std::string type;  // a kCommand*; a node ignores types it does not know
  std::string run_id;
  std::string reason;
};

// One of a lease answer's `runs`.
// The most nodes one run may span (AmlCompute's largest clusters are far smaller).
inline constexpr int kMaxNodeCount = 1000;

// One node of a run across nodes, as every share is told: its id and the address its peers reach
// it on.
struct ShareNode {
  std::string node_id;
  std::string address;
};

struct LeasedRun {
  std::string run_id;
  std::int64_t epoch = 0;
  std::string experiment_name;
  std::string job_text;
  std::string job_file_name;
  // A run across nodes: this share's node rank, the run's node count, and every share's node by
  // rank. A run of one node: 0, 1 and none.
  int node_rank = 0;
  int node_count = 1;
  std::vector<ShareNode> nodes;
  // The rendezvous port on rank 0's node (MASTER_PORT), the same for every share.
  int master_port = 6105;
  // The bearer token of this run's epoch for its daemon launches (MPI across nodes): it lets
  // whoever holds it start a command on a node holding a share of this run and epoch, and nothing
  // else. Empty for a run of one node.
  std::string launch_token;
  // The node this lease is for, and the run's compute: its name, and for an attached compute its
  // kind ("batch": an Azure Batch pool, with its pool id and account name). "" where unknown.
  std::string node_id;
  std::string compute_name;
  std::string compute_kind;
  std::string batch_pool_id;
  std::string batch_account_name;
};

// A daemon launch of a run across nodes (POST /v1/runs/{id}/launches, docs/protocol.md): what
// Open MPI's rsh agent asked to start on a share's node, and how far it got there.
enum class LaunchState { Pending, Running, Exited };
std::string to_string(LaunchState state);
// "pending", "running", "exited"; nullopt for anything else.
std::optional<LaunchState> launch_state_from_string(const std::string& text);

nlohmann::json heartbeat_body(const HeartbeatReport& report);
nlohmann::json command_json(const Command& command);
nlohmann::json leased_run_json(const LeasedRun& run);
// A lease's node_id and compute, as leased_run_json writes them ({} when it has neither); the
// agent keeps them with a held run. The reader takes them back from such an object.
nlohmann::json leased_compute_json(const LeasedRun& run);
Result<void> read_leased_compute(const nlohmann::json& item, LeasedRun& run);

// The answers' readers. Errors are "BadAnswer", naming what is missing or of the wrong type.
Result<LeasedRun> leased_run_from_json(const nlohmann::json& item);
// A leased run's "share" object alone (a run across nodes; null for a run of one node), and the
// reader of one into `run` (null leaves it a run of one node), for the agent's state store.
nlohmann::json leased_share_json(const LeasedRun& run);
Result<void> read_leased_share(const nlohmann::json& share, LeasedRun& run);
// Entries that are not objects are skipped.
std::vector<Command> commands_from_json(const nlohmann::json& commands);

}  // namespace amlnode::wire
