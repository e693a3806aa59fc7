#pragma once

// What the control plane remembers: nodes, registration tokens, runs and the leases that gave runs
// their epochs. These are plain values; the Cluster owns them in memory and the Store persists
// them.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "spec/run_status.h"

namespace amlnode::controlplane {

// Times are Unix milliseconds from the injected clock; 0 means "not yet".
using Millis = std::int64_t;

struct NodeRecord {
  std::string node_id;
  std::string token_hash;  // sha256 of the node token; the token itself is never stored
  std::string compute_name;
  std::string hostname;
  std::vector<std::string> ips;
  int ssh_port = 22;
  int cpus = 0;
  std::int64_t memory_bytes = 0;
  int gpus = 0;
  nlohmann::json labels = nlohmann::json::object();
  std::string agent_version;
  std::string state = "idle";  // as the node last reported it (AmlCompute nodeState values)
  std::string reason;          // why the node is unusable, as it reported
  bool lost = false;           // no heartbeat for heartbeat_timeout
  bool draining = false;       // an operator asked it to drain: no new leases, drain command
  Millis registered_at = 0;
};

// A compute the control plane has a record of. Nodes join a compute by name whether or not it
// has one; a record says what the compute is. kind "batch": an Azure Batch pool attached with
// `amlnode compute attach-batch` (settings: pool_id, account_name), which runs AzureBatchStep
// tasks only.
inline constexpr const char* kComputeKindBatch = "batch";
// kind "amlcompute": a cluster made with `amlnode compute create` (settings: vm_size, vm_priority,
// min_nodes, max_nodes, idle_seconds_before_scaledown, description), as AmlCompute's
// provisioning_configuration describes one.
inline constexpr const char* kComputeKindAmlCompute = "amlcompute";
struct ComputeRecord {
  std::string name;
  std::string kind;
  nlohmann::json settings = nlohmann::json::object();
  Millis created_at = 0;
};

struct RegistrationTokenRecord {
  std::string token_hash;
  std::string compute_name;  // "" when the token is not bound to a compute
  Millis created_at = 0;
  Millis spent_at = 0;  // 0 while still usable
  std::string spent_by;
  // SHA-256 of the registration key the spending node sent ("" when it sent none). The same token
  // with the same key registers again as the same node, so a node that lost the answer (or died
  // before storing it) is not locked out by its own spent token.
  std::string key_hash;
  // A join token (`amlnode compute token create --uses N --ttl T`): up to max_uses nodes register
  // with it, each a node of its own, until expires_at (0: never) or until it is revoked. A
  // single-use token has max_uses 1 and no expiry. spent_at, spent_by and key_hash are its first
  // node's; `nodes` lists every node it registered: [{"node_id", "key_hash"}].
  std::int64_t max_uses = 1;
  Millis expires_at = 0;
  bool revoked = false;
  nlohmann::json nodes = nlohmann::json::array();
};

struct RunRecord {
  std::string run_id;
  std::string experiment_name;
  std::string compute_name;
  std::string job_file_name;
  spec::RunStatus status = spec::RunStatus::NotStarted;
  std::int64_t epoch = 0;      // 0 until the first lease; each lease adds one
  std::string node_id;         // the node holding the current epoch ("" while queued)
  std::int64_t queue_seq = 0;  // position in its compute's FIFO, kept across requeues
  std::optional<int> exit_code;
  nlohmann::json error;  // null or {"code", "message"} as the node reported it
  nlohmann::json timings = nlohmann::json::object();
  Millis created_at = 0;
  Millis queued_at = 0;
  Millis started_at = 0;  // first Running
  Millis ended_at = 0;    // terminal
  Millis not_responding_since = 0;
  bool has_outputs = false;
  // What the node could not deliver of the run's log streams: {stream: {"bytes", "why"}}.
  nlohmann::json dropped_logs = nlohmann::json::object();
  // A run across nodes (node_count > 1) is leased to that many distinct nodes at once, one share
  // each, under one epoch (a gang lease). share_nodes[k] holds node rank k's share of the current
  // epoch (rank 0's node, the master, is also node_id), and share_statuses[k] is what that share
  // last reported; both are empty while the run is not leased, and for a run of one node.
  // share_past_holders: every node that held a share of any epoch, as past_holders is kept for a
  // run of one node by its lease records.
  int node_count = 1;
  int master_port = 6105;  // the rendezvous port rank 0's node offered when the gang was placed
  std::vector<std::string> share_nodes;
  std::vector<spec::RunStatus> share_statuses;
  std::vector<std::string> share_past_holders;
};

struct LeaseRecord {
  std::string run_id;
  std::int64_t epoch = 0;
  std::string node_id;
  Millis leased_at = 0;
};

}  // namespace amlnode::controlplane
