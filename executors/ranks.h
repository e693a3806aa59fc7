#pragma once

// The ranks of a distributed run on one node (docs/distributed.md): how many processes a job asks
// for, how they start, and the environment contract each one sees, as Azure ML sets it.
//
//   MPI (MpiConfiguration, distributed_training: mpi)  mpirun -np N; Open MPI sets
//       OMPI_COMM_WORLD_RANK / SIZE / LOCAL_RANK / LOCAL_SIZE in each rank
//   PyTorch (PyTorchConfiguration, gloo / nccl)        N processes started by the shim, each with
//       MASTER_ADDR, MASTER_PORT, WORLD_SIZE, NODE_RANK, RANK, LOCAL_RANK
//   TensorFlow (worker_count + parameter_server_count) one process per worker and per parameter
//       server, each with TF_CONFIG naming every task by address and port
//
// A job of one process (process_count_per_node 1, one TensorFlow worker and no parameter server)
// keeps the single-process plan: its script is the per-node launcher, as on Azure ML.

#include <optional>
#include <string>

#include "executors/plan.h"

namespace amlnode::executors {

// Fills plan.launcher, plan.ranks, plan.launcher_log and the rank variables for a job that runs
// several processes on this node; leaves a single-process plan as it is. Called by resolve_plan
// once plan.argv and plan.env are final. A layout this node cannot run sets plan.cannot_run.
void plan_ranks(const spec::Job& job, const PlanContext& context, Plan& plan);

// What a share's processes need to reach the control plane under the run's epoch (MPI's daemon
// launches, a ParallelRunStep's mini-batches): AMLNODE_LAUNCH_URL, _TOKEN, _CA_FILE and
// AMLNODE_NODE_RANK.
void set_launch_vars(Plan& plan, const ShareContext& share);

// The port probes PlanContext takes: whether `port` can be bound on the loopback and any address
// here, and a port the kernel gives out as free.
bool port_is_free(int port);
int pick_free_port();

// For an MPI run that failed: the rank mpirun names in its own messages as the first to fail
// ("Process name: [[4321,1],2]" or "process rank 2 with PID"), if it names one.
std::optional<int> mpirun_failed_rank(const std::string& mpirun_output);

}  // namespace amlnode::executors
