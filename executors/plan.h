#pragma once

// The resolved plan of a run: everything needed to start it on this node, derived from the job
// and the node's context alone (no side effects). `amlnode run --dry-run` prints it; the local run
// and the daemon execute it.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "executors/environment_kind.h"
#include "executors/environments/spec.h"
#include "spec/job.h"

namespace amlnode::executors {

// The port Azure ML uses for the PyTorch / MPI rendezvous (MASTER_PORT).
inline constexpr int kMasterPort = 6105;

// This node's share of a run across nodes (a gang lease, docs/distributed.md): its node rank, and
// every share's node address by node rank, rank 0's being the master's. The master's port is
// agreed before any share starts: the master's agent chooses it (6105 unless taken there) and
// every share is given the same.
struct ShareContext {
  int node_rank = 0;
  std::vector<std::string> addresses;
  int master_port = kMasterPort;
  // MPI across nodes (docs/distributed.md): mpirun on the master starts Open MPI's daemons on the
  // other shares' nodes through `<agent_program> mpi-rsh`, which asks the control plane at
  // launch_url with the epoch's launch_token; each other share runs `<agent_program> mpi-host`,
  // which starts them. The ranks see these as AMLNODE_LAUNCH_* variables.
  std::string launch_url;
  std::string launch_token;
  std::string launch_ca_file;  // "" for the system's trust store
  std::filesystem::path agent_program;
  int node_count() const { return static_cast<int>(addresses.size()); }
  bool is_master() const { return node_rank == 0; }
};

// The run id, and for a share of a run across nodes (node_rank >= 0) its node rank too
// ("<run id>.node_01"): the shares of one run may share a Docker daemon (nodes on one host), and
// must neither collide on a container name nor find each other's containers by label.
std::string container_key_of(const std::string& run_id, int node_rank = -1);

// Where a run lives and what the node provides. Images are overridable in the agent config (for
// mirrors and air-gapped sites).
struct PlanContext {
  std::string run_id;
  std::filesystem::path run_dir;  // <state_dir>/runs/<run_id>
  std::string master_address = "127.0.0.1";
  std::string default_cpu_image = spec::kDefaultCpuImage;
  std::string default_gpu_image = spec::kDefaultGpuImage;
  double kill_grace_seconds = 10.0;
  std::filesystem::path envs_dir;                            // <state_dir>/envs
  std::filesystem::path system_python = "/usr/bin/python3";  // what pip-only venvs are made from
  // The folder holding the amlnode_run Python module (metrics::python_module_dir()); the run's
  // process gets it on PYTHONPATH. Unset: the module is not offered.
  std::optional<std::filesystem::path> python_module_dir;
  // Ports for a distributed run's rendezvous: whether MASTER_PORT's default (6105) is free here,
  // and a free port when it is not (or for each TensorFlow task). These look at the machine, so
  // the caller supplies them (executors/ranks.h: port_is_free, pick_free_port); unset, 6105 is
  // taken as free
  // and further ports are counted up from it.
  std::function<bool(int port)> port_free;
  std::function<int()> free_port;
  // Set for a share of a run across nodes; master_address is then the master node's address.
  std::optional<ShareContext> share;
  // This node's CPUs and GPUs (a ParallelRunStep's default worker count), and the agent's own
  // program (what runs a ParallelRunStep's node: `amlnode parallel-node`). Unset: refused.
  int cpus = 1;
  int gpus = 0;
  std::filesystem::path agent_program;
  // The node driver as a static executable (`amlnode-parallel-node`, beside the agent's program),
  // which runs a ParallelRunStep's node inside a Docker container. Unset: refused there.
  std::filesystem::path parallel_driver;
  // The compute kind this node was attached as (its compute_kind label: remote, hdinsight); ""
  // for a node of a compute of its own. PySpark runs only on hdinsight.
  std::string compute_kind;
  // spark-submit and yarn as the agent finds them on its own PATH (not the run's, where a conda
  // environment's pip pyspark would come first); empty when absent.
  std::filesystem::path spark_submit;
  std::filesystem::path yarn;
  // AzureBatchStep tasks (executors/batch_task.h, docs/batch.md). The compute the lease names
  // ("" under amlnode run, which has no control plane), and when it is a Batch pool (kind
  // "batch"), the pool and account the control plane attached it with.
  std::string compute_name;
  // Planned for a lease of a control plane (the daemon), not for amlnode run.
  bool leased = false;
  std::string batch_pool_id;
  std::string batch_account_name;
  std::string batch_account_url;  // the control plane's URL: where this pool is managed
  std::string node_id;            // this node's id at the control plane; "" under amlnode run
  // AZ_BATCH_NODE_ROOT_DIR: the node's Batch folders (shared, startup, workitems/...).
  std::filesystem::path batch_root_dir;
  // Whether the agent runs as root, and so can run a task as the unprivileged task user.
  bool agent_is_root = false;
};

// An AzureBatchStep's task on this node (executors/batch_task.h): Azure Batch's folders, who it
// runs as, and the rules of its end.
struct BatchTaskPlan {
  std::string job_id;   // the run id
  std::string task_id;  // the step's name
  std::string pool_id;
  std::filesystem::path root_dir;  // AZ_BATCH_NODE_ROOT_DIR
  std::filesystem::path job_dir;   // root_dir/workitems/<job_id>
  std::filesystem::path task_dir;  // job_dir/job-1/<task_id>: stdout.txt, stderr.txt, wd/
  std::filesystem::path stderr_log;
  // The executable as a file of the task's working directory, made executable before the start
  // (Batch gives resource files mode 0770); empty when it is found on PATH or given absolute.
  std::filesystem::path executable_file;
  std::vector<std::filesystem::path> output_dirs;  // wd/outputs/<name>
  // Who the task runs as: the unprivileged task user, or the agent itself (run_task_as_admin, or
  // amlnode run started by a user who is not root).
  std::string user;  // "" : the agent's own identity
  bool positive_exit_code_failure = true;
  bool delete_job_after_finish = true;
};

// One input as it is staged into the run folder.
struct StagedInput {
  std::string name;
  std::filesystem::path source;  // the local path the job named
  std::filesystem::path target;  // what AZUREML_DATAREFERENCE_<name> points at
  spec::InputMode mode = spec::InputMode::Mount;
  // An absolute path_on_compute (below /tmp): outside the run folder, so the agent makes it only
  // when nothing is there and removes it when the run is released.
  bool outside_run_folder = false;
};

// How the ranks of a distributed run start on this node.
enum class RankLauncher {
  Single,     // one process, as every run that is not distributed (Plan::ranks is empty)
  Processes,  // each rank started by the shim itself (PyTorch, TensorFlow)
  Mpirun,     // Open MPI's mpirun starts them (MPI), the shim supervising mpirun
};
std::string to_string(RankLauncher);

// One process of a distributed run: the rank's own variables over the plan's, and its log.
struct RankPlan {
  int rank = 0;
  int local_rank = 0;
  std::string role;  // TensorFlow: "worker" or "ps"; otherwise empty
  std::vector<std::string> argv;
  spec::EnvVars env;
  std::filesystem::path std_log;  // run_dir/user_logs/std_log_process_NN.txt
};

struct Plan {
  std::string run_id;
  // What the run's Docker container is named and labelled by (container_key_of).
  std::string container_key;
  std::string experiment_name;
  std::filesystem::path run_dir;
  std::filesystem::path working_dir;  // run_dir/wd
  std::filesystem::path std_log;      // run_dir/user_logs/std_log.txt
  std::filesystem::path system_logs;  // run_dir/system_logs

  std::vector<std::string> argv;
  // Variables amlnode sets, in the order they are applied: the Azure ML runtime contract first,
  // then the environment definition's variables, then the job's own. The process also inherits
  // the caller's environment underneath these.
  spec::EnvVars env;

  EnvironmentKind environment_kind = EnvironmentKind::UserManaged;
  std::string environment_hash;
  // The conda / pip environment to prepare (built once per hash into envs_dir/<hash>).
  std::optional<environments::EnvironmentSpec> python_environment;
  std::optional<std::string> image;  // the base image, when the environment is Docker
  std::string shm_size;
  std::uint64_t shm_size_bytes = 0;
  std::optional<std::int64_t> deadline_seconds;
  double kill_grace_seconds = 10.0;
  std::vector<StagedInput> inputs;
  // The job's models, staged as inputs are (linked) under run_dir/models/<name>/<version>/, for
  // Model.get_model_path; AZUREML_MODEL_DIR is run_dir/models.
  std::vector<StagedInput> models;
  // What the SDK stand-in in the run reads (docs/sdk-compat.md, "The run context file"), written
  // to run_context_file before the process starts; $AMLNODE_RUN_CONTEXT names it.
  nlohmann::json run_context = nlohmann::json::object();
  std::filesystem::path run_context_file;
  // Appended to the process's PYTHONPATH (after the job's or the inherited one), so scripts can
  // `import amlnode_run`; see PlanContext.
  std::optional<std::filesystem::path> python_module_dir;
  // Files of this node the run's process needs inside its Docker container (a ParallelRunStep's
  // static node driver, the control plane's CA file): bound there read-only at the same path.
  std::vector<std::filesystem::path> host_files;

  // A distributed run on this node (executors/ranks.h): one entry per rank, in rank order, and
  // how they start. std_log is then rank 0's log (what `amlnode run` shows); an MPI run's
  // mpirun writes its own messages to launcher_log (user_logs/mpi_log.txt).
  RankLauncher launcher = RankLauncher::Single;
  // This node's ranks; numbered in the run, which for a share of a run across nodes has
  // world_size ranks over all its nodes (here only some of them).
  std::vector<RankPlan> ranks;
  int world_size = 1;
  std::optional<std::filesystem::path> launcher_log;
  // A share of an MPI run across nodes other than the master's: its one process is the agent's
  // `mpi-host`, which starts Open MPI's daemon (and so this node's ranks) for the master's mpirun.
  bool hosts_mpi_daemon = false;
  // A ParallelRunStep's node (parallel/node_driver.h) writes why it failed here ({"message"}),
  // which becomes the run's error.
  std::optional<std::filesystem::path> error_file;
  // An AzureBatchStep's task: its process is the executable, run as Azure Batch runs it.
  std::optional<BatchTaskPlan> batch;
  // Things the plan chose that a user should hear about (a port other than 6105, ...).
  std::vector<std::string> notes;

  // Set when this node cannot execute the plan (an environment kind still to come, a conda file
  // that cannot be read); the run then fails before anything starts, with this error.
  std::optional<Error> cannot_run;
};

Plan resolve_plan(const spec::Job& job, const PlanContext& context);

// Sets `name` in `env`, in place when it is there, else at the end.
void set_env_var(spec::EnvVars& env, const std::string& name, const std::string& value);

// The content hash of a job's environment: for conda / pip the hash of the canonical spec
// (environments::environment_spec), otherwise of environment_identity.
std::string environment_hash(const spec::Job& job, const PlanContext& context);
// The canonical identity of a user-managed or Docker environment: sorted package lists, no
// secrets, nothing of the source file's formatting.
nlohmann::json environment_identity(const spec::Job& job);

nlohmann::json plan_to_json(const Plan& plan);
std::string plan_to_text(const Plan& plan);

}  // namespace amlnode::executors
