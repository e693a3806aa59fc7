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
#include "agent/daemon/launch_env.h"
#include "parallel/mini_batch_queue.h"

namespace amlnode::agent {

// How long the control plane may be unreachable (a restart) before the share gives up.
inline constexpr std::chrono::seconds kParallelUnreachableLimit{600};

parallel::QueueFactory control_plane_queue_factory(ShareLaunchEnv env,
                                                   std::unique_ptr<HttpClient> client);
parallel::QueueFactory control_plane_queue_factory(const ShareLaunchEnv& env);

// `amlnode parallel-node` and `amlnode-parallel-node`: runs the node of the ParallelRunStep whose
// spec is $AMLNODE_PRS_SPEC, with the control plane's mini-batches when it is a share across
// nodes; `program` names the command in errors. Returns the process's exit code.
int run_parallel_node_from_env(const char* program);

}  // namespace amlnode::agent
