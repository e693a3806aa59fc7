#pragma once

// Open MPI across nodes without SSH keys between them (docs/distributed.md, "MPI across nodes").
// mpirun, on the master share's node, starts its daemon (orted) on every other share's node
// through its rsh agent; the agent's own program is that rsh agent:
//
//   amlnode mpi-rsh [ssh options] HOST COMMAND...   asks the control plane to start COMMAND on
//                                                    the share whose node's address is HOST, and
//                                                    lasts as long as it runs there, exiting with
//                                                    its code, as ssh would
//   amlnode mpi-host                                 the process of every other share: takes that
//                                                    share's launches and runs them under the
//                                                    share's supervision (its shim, its cgroup)
//
// Both read the run's AMLNODE_LAUNCH_URL, AMLNODE_LAUNCH_TOKEN (the epoch's launch token),
// AMLNODE_LAUNCH_CA_FILE, AMLNODE_NODE_RANK and AZUREML_RUN_ID, which the plan sets
// (executors/ranks.cc). The control plane refuses a host that holds no share of the run.

#include <string>
#include <vector>

namespace amlnode::agent {

// `args` are what follows "mpi-rsh". Returns the exit code: the remote command's, or 255 when it
// could not be started (ssh's code for its own failures).
int run_mpi_rsh(const std::vector<std::string>& args);
int run_mpi_host();

}  // namespace amlnode::agent
