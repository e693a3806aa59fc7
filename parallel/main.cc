// amlnode-parallel-node: a ParallelRunStep's node driver (node_driver.h) as a small, fully
// statically linked executable, for runs whose workers live in a Docker container. It is
// bind-mounted into the container read-only, as amlnode-shim is, and runs there with no C library
// of the image's (which may be older than the one the agent was built against). Its spec comes as
// $AMLNODE_PRS_SPEC, as `amlnode parallel-node`'s does; it takes its mini-batches from the
// in-process scheduler only (across nodes a node's driver talks to the control plane, which runs
// on the host: `amlnode parallel-node`).

#include <cstdio>
#include <cstdlib>

#include "parallel/node_driver.h"

int main() {
  const char* text = std::getenv("AMLNODE_PRS_SPEC");
  auto spec = amlnode::parallel::read_node_spec(text ? text : "");
  if (!spec.ok()) {
    std::fprintf(stderr,
                 "amlnode-parallel-node: %s (only a ParallelRunStep's run in a container runs "
                 "this)\n",
                 spec.error().message.c_str());
    return 2;
  }
  return amlnode::parallel::run_parallel_node(*spec);
}
