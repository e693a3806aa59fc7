#pragma once

// What a share of a run across nodes is given to reach the control plane under its epoch (the
// plan sets these, executors/ranks.h set_launch_vars): AMLNODE_LAUNCH_URL, AMLNODE_LAUNCH_TOKEN,
// AMLNODE_LAUNCH_CA_FILE, AMLNODE_NODE_RANK and AZUREML_RUN_ID. Open MPI's daemon launches
// (mpi_launch.h) and a ParallelRunStep's mini-batches (parallel_client.h) read them here.

#include <optional>
#include <string>

#include "common/result.h"

namespace amlnode::agent {

struct ShareLaunchEnv {
  std::string url;
  std::string token;  // the run epoch's launch token
  std::string ca_file;
  std::string run_id;
  int node_rank = -1;
};

// nullopt when this process is no share's (none of them set); an error when only some are.
Result<std::optional<ShareLaunchEnv>> read_share_launch_env();

}  // namespace amlnode::agent
