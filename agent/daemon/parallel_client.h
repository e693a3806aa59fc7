#pragma once

// A ParallelRunStep's share across nodes takes its mini-batches from the control plane
// (docs/parallel-run.md, "Across nodes"; docs/protocol.md, "Mini-batches"): this is the node
// driver's MiniBatchQueue for it. It opens the run's book with this node's cut of the inputs,
// then exchanges outcomes (with their rows) for mini-batches, keeping a few more than its free
// workers need so that they never wait on the network, and fewer when tries are slow so that no
// node hoards the last mini-batches. The first node rank writes the output the control plane
// assembled.

#include <memory>
#include <optional>
#include <string>

#include "agent/daemon/http_client.h"
#include "parallel/mini_batch_queue.h"

namespace amlnode::agent {

struct ParallelShareEnv {
  std::string url;
  std::string token;  // the run epoch's launch token
  std::string ca_file;
  std::string run_id;
  int node_rank = 0;
};

// The share's settings from AMLNODE_LAUNCH_URL, AMLNODE_LAUNCH_TOKEN, AMLNODE_LAUNCH_CA_FILE,
// AMLNODE_NODE_RANK and AZUREML_RUN_ID; nullopt when this run is not a share across nodes, an
// error when only some of them are set.
Result<std::optional<ParallelShareEnv>> parallel_share_env();

// How long the control plane may be unreachable (a restart) before the share gives up.
inline constexpr std::chrono::seconds kParallelUnreachableLimit{600};

parallel::QueueFactory control_plane_queue_factory(ParallelShareEnv env,
                                                   std::unique_ptr<HttpClient> client);
parallel::QueueFactory control_plane_queue_factory(const ParallelShareEnv& env);

// `amlnode parallel-node` and `amlnode-parallel-node`: runs the node of the ParallelRunStep whose
// spec is $AMLNODE_PRS_SPEC, with the control plane's mini-batches when it is a share across
// nodes; `program` names the command in errors. Returns the process's exit code.
int run_parallel_node_from_env(const char* program);

}  // namespace amlnode::agent
