// amlnode-parallel-node: a ParallelRunStep's node driver (`amlnode parallel-node`) as a small,
// fully statically linked executable, for runs whose workers live in a Docker container. It is
// bound into the container read-only, as amlnode-shim is, and runs there with no C library of the
// image's, which may be older than the one the agent was built against. Across nodes it reaches
// the control plane as `amlnode parallel-node` does (agent/daemon/parallel_client.h).

#include "agent/daemon/parallel_client.h"

int main() {
  return amlnode::agent::run_parallel_node_from_env("amlnode-parallel-node");
}
