#include "executors/ranks.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>

#include "executors/run_folder.h"

namespace amlnode::executors {
namespace {

using spec::Communicator;

bool is_mpi(Communicator communicator) {
  return communicator == Communicator::OpenMpi || communicator == Communicator::IntelMpi ||
         communicator == Communicator::Mpi;
}

std::filesystem::path rank_log(const Plan& plan, int rank) {
  char name[64];
  std::snprintf(name, sizeof name, "std_log_process_%02d.txt", rank);
  return plan.run_dir / "user_logs" / name;
}

// Gives out the ports of one plan: 6105 first when it is free, then free ones.
class PortChooser {
 public:
  explicit PortChooser(const PlanContext& context) : context_(context) {}

  // `what` names the port in the note: MASTER_PORT, or TensorFlow's first worker.
  int master(Plan& plan, const std::string& what = "MASTER_PORT") {
    // A share of a run across nodes: the master's agent chose it for every share.
    if (context_.share) return take(context_.share->master_port);
    if (!context_.port_free || context_.port_free(kMasterPort)) return take(kMasterPort);
    int port = next_free();
    plan.notes.push_back(what + " is " + std::to_string(port) + ": port " +
                         std::to_string(kMasterPort) + " is in use on this node");
    return port;
  }
  int next_free() {
    if (!context_.free_port) return take(kMasterPort + static_cast<int>(given_.size()));
    for (int tries = 0; tries < 16; ++tries) {
      int port = context_.free_port();
      if (port > 0 && std::find(given_.begin(), given_.end(), port) == given_.end())
        return take(port);
    }
    return take(context_.free_port());
  }

 private:
  int take(int port) {
    given_.push_back(port);
    return port;
  }
  const PlanContext& context_;
  std::vector<int> given_;
};

std::string address(const PlanContext& context, int port) {
  return context.master_address + ":" + std::to_string(port);
}

void remove_var(spec::EnvVars& env, const std::string& name) {
  std::erase_if(env, [&](const auto& kv) { return kv.first == name; });
}

// The variables every rank of every kind shares.
void set_common(Plan& plan, const PlanContext& context, int master_port) {
  set_env_var(plan.env, "AZ_BATCH_MASTER_NODE", address(context, master_port));
  set_env_var(plan.env, "AZ_BATCHAI_MPI_MASTER_NODE", context.master_address);
  set_env_var(plan.env, "AZ_BATCHAI_JOB_MASTER_NODE_IP", context.master_address);
  if (context.share) return;  // the contract's own lists name every node (plan.cc)
  set_env_var(plan.env, "AZ_BATCH_HOST_LIST", context.master_address);
  set_env_var(plan.env, "AZ_BATCH_NODE_LIST", context.master_address);
}

// `rank` is the run's (global across nodes), `local_rank` this node's.
RankPlan new_rank(const Plan& plan, int rank, int local_rank) {
  RankPlan out;
  out.rank = rank;
  out.local_rank = local_rank;
  out.argv = plan.argv;
  out.std_log = rank_log(plan, rank);
  set_env_var(out.env, "AZUREML_PROCESS_NAME", "rank_" + std::to_string(rank));
  return out;
}

// The rendezvous every rank of an MPI or PyTorch run shares: the master's address and port.
void set_rendezvous(Plan& plan, const PlanContext& context) {
  PortChooser ports(context);
  int master_port = ports.master(plan);
  set_common(plan, context, master_port);
  set_env_var(plan.env, "MASTER_ADDR", context.master_address);
  set_env_var(plan.env, "MASTER_PORT", std::to_string(master_port));
}

// `count` processes on this node; across nodes, node rank k's are the run's ranks k * count to
// (k + 1) * count - 1, as torchrun numbers them.
void plan_pytorch(const PlanContext& context, Plan& plan, int count) {
  set_rendezvous(plan, context);
  int node_rank = context.share ? context.share->node_rank : 0;
  int nodes = context.share ? context.share->node_count() : 1;
  set_env_var(plan.env, "WORLD_SIZE", std::to_string(count * nodes));
  set_env_var(plan.env, "NODE_RANK", std::to_string(node_rank));
  for (int local = 0; local < count; ++local) {
    int rank = node_rank * count + local;
    RankPlan r = new_rank(plan, rank, local);
    set_env_var(r.env, "RANK", std::to_string(rank));
    set_env_var(r.env, "LOCAL_RANK", std::to_string(local));
    set_env_var(r.env, "LOCAL_WORLD_SIZE", std::to_string(count));
    plan.ranks.push_back(std::move(r));
  }
}

// A TensorFlow run across nodes: its tasks (the workers, then the parameter servers) are dealt out
// over the nodes in turn, task t on node rank t % nodes. A node's first task listens on the
// agreed master port and each further one on the next port up: every share computes every
// task's address the same way, without asking the other nodes.
void plan_tensorflow_share(const spec::Job& job, const PlanContext& context, Plan& plan) {
  const ShareContext& share = *context.share;
  int workers = job.distributed.worker_count;
  int tasks = workers + job.distributed.parameter_server_count;
  set_common(plan, context, share.master_port);
  nlohmann::json cluster = {{"worker", nlohmann::json::array()}};
  auto task_address = [&](int task) {
    int node = task % share.node_count();
    return share.addresses[node] + ":" +
           std::to_string(share.master_port + task / share.node_count());
  };
  for (int task = 0; task < tasks; ++task)
    cluster[task < workers ? "worker" : "ps"].push_back(task_address(task));
  for (int task = share.node_rank; task < tasks; task += share.node_count()) {
    RankPlan r = new_rank(plan, task, task / share.node_count());
    bool worker = task < workers;
    r.role = worker ? "worker" : "ps";
    nlohmann::json tf_config = {
        {"cluster", cluster},
        {"task", {{"type", r.role}, {"index", worker ? task : task - workers}}},
        {"environment", "cloud"}};
    set_env_var(r.env, "TF_CONFIG", tf_config.dump());
    plan.ranks.push_back(std::move(r));
  }
  remove_var(plan.env, "TF_CONFIG");
}

void plan_tensorflow(const spec::Job& job, const PlanContext& context, Plan& plan) {
  int workers = job.distributed.worker_count;
  int servers = job.distributed.parameter_server_count;
  PortChooser ports(context);
  int master_port = ports.master(plan, "worker 0's port");
  set_common(plan, context, master_port);
  nlohmann::json worker_addresses = nlohmann::json::array();
  nlohmann::json server_addresses = nlohmann::json::array();
  // Worker 0 listens on the master port; every other task on a port of its own.
  worker_addresses.push_back(address(context, master_port));
  for (int i = 1; i < workers; ++i) worker_addresses.push_back(address(context, ports.next_free()));
  for (int i = 0; i < servers; ++i) server_addresses.push_back(address(context, ports.next_free()));
  nlohmann::json cluster = {{"worker", worker_addresses}};
  if (servers > 0) cluster["ps"] = server_addresses;
  for (int rank = 0; rank < workers + servers; ++rank) {
    RankPlan r = new_rank(plan, rank, rank);
    bool worker = rank < workers;
    r.role = worker ? "worker" : "ps";
    nlohmann::json tf_config = {
        {"cluster", cluster},
        {"task", {{"type", r.role}, {"index", worker ? rank : rank - workers}}},
        {"environment", "cloud"}};
    set_env_var(r.env, "TF_CONFIG", tf_config.dump());
    plan.ranks.push_back(std::move(r));
  }
  remove_var(plan.env, "TF_CONFIG");
}

// mpirun starts the ranks; each one's output goes to its own std_log_process_NN.txt through a
// shell that then becomes the rank's program (exec), so mpirun's signals reach the program itself.
// Open MPI starts every rank in mpirun's working folder; the shell moves it to its own node's
// (the same path only when every node keeps its state in the same place).
constexpr const char* kRankRedirect =
    "cd \"$AMLNODE_RANK_WORK_DIR\" || exit 1; "
    "AZUREML_PROCESS_NAME=rank_$OMPI_COMM_WORLD_RANK; export AZUREML_PROCESS_NAME; "
    "exec \"$0\" \"$@\" >>\"$AMLNODE_RANK_LOG_DIR/std_log_process_$(printf %02d "
    "\"$OMPI_COMM_WORLD_RANK\").txt\" 2>&1";

// Across nodes, mpirun runs on the master's node and starts Open MPI's daemon (orted) on each
// other share's node through the agent (`amlnode mpi-rsh`, answered there by the share's
// `amlnode mpi-host`); its own node is `localhost` to it, so it starts no daemon there. Ranks are
// placed by slot, node rank k's being k * count to (k + 1) * count - 1.
std::vector<std::string> mpirun_hosts(const ShareContext& share, int count) {
  std::string hosts;
  for (int node = 0; node < share.node_count(); ++node) {
    hosts += (node == 0 ? std::string("localhost") : "," + share.addresses[node]) + ":" +
             std::to_string(count);
  }
  return {"--host", hosts, "--mca", "plm_rsh_agent", share.agent_program.string() + " mpi-rsh"};
}

void plan_mpi(const spec::Job& job, const PlanContext& context, Plan& plan, int count) {
  set_rendezvous(plan, context);
  int node_rank = context.share ? context.share->node_rank : 0;
  int nodes = context.share ? context.share->node_count() : 1;
  // Open MPI sets these in each rank; the single-process values must not shadow them.
  // So must the single-process values of the other frameworks' contracts (a PyTorch job over
  // MPI, as Horovod's are): the world is the ranks'.
  for (const char* name :
       {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE", "RANK", "LOCAL_RANK", "TF_CONFIG"})
    remove_var(plan.env, name);
  if (job.framework == spec::Framework::PyTorch) {
    set_env_var(plan.env, "WORLD_SIZE", std::to_string(count * nodes));
    set_env_var(plan.env, "NODE_RANK", std::to_string(node_rank));
  }
  // Jobs may run as root (amlnode run by root, a container's user); Open MPI refuses that unless
  // told, and the variables mean nothing to it otherwise. Single-copy shared memory
  // (CMA) needs ptrace rights that containers and hardened kernels withhold, and the copy-in/out
  // path is as fast for the message sizes of a rendezvous.
  set_env_var(plan.env, "OMPI_ALLOW_RUN_AS_ROOT", "1");
  set_env_var(plan.env, "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
  set_env_var(plan.env, "OMPI_MCA_btl_vader_single_copy_mechanism", "none");
  set_env_var(plan.env, "AMLNODE_RANK_LOG_DIR", (plan.run_dir / "user_logs").string());
  set_env_var(plan.env, "AMLNODE_RANK_WORK_DIR", plan.working_dir.string());
  for (int local = 0; local < count; ++local) {
    RankPlan r = new_rank(plan, node_rank * count + local, local);
    r.env.clear();  // Open MPI's own variables are the rank's
    plan.ranks.push_back(std::move(r));
  }
  plan.launcher_log = RunFolder{plan.run_dir}.path(RunFolder::kMpiLog);
  if (context.share) set_launch_vars(plan, *context.share);
  if (context.share && !context.share->is_master()) {
    // This node's ranks are started by the daemon mpirun asks this share to start.
    plan.argv = {context.share->agent_program.string(), "mpi-host"};
    plan.hosts_mpi_daemon = true;
    return;
  }
  std::vector<std::string> argv = {"mpirun", "-np", std::to_string(count * nodes)};
  if (context.share) {
    auto hosts = mpirun_hosts(*context.share, count);
    argv.insert(argv.end(), hosts.begin(), hosts.end());
  }
  for (const char* option :
       {"--oversubscribe", "--bind-to", "none", "/bin/sh", "-c", kRankRedirect})
    argv.push_back(option);
  argv.insert(argv.end(), plan.argv.begin(), plan.argv.end());
  plan.argv = std::move(argv);
}

}  // namespace

std::string to_string(RankLauncher launcher) {
  switch (launcher) {
    case RankLauncher::Single:
      return "single";
    case RankLauncher::Processes:
      return "processes";
    case RankLauncher::Mpirun:
      return "mpirun";
  }
  return "single";
}

void plan_ranks(const spec::Job& job, const PlanContext& context, Plan& plan) {
  const auto& distributed = job.distributed;
  int per_node = distributed.process_count_per_node;
  bool tensorflow = distributed.communicator == Communicator::ParameterServer;
  int tasks = distributed.worker_count + distributed.parameter_server_count;
  if (tensorflow && context.share) {
    if (tasks < context.share->node_count()) {
      plan.cannot_run =
          Error{"NotSupported", "distributed_job_config: " + std::to_string(tasks) +
                                    " TensorFlow tasks cannot fill " +
                                    std::to_string(context.share->node_count()) +
                                    " nodes; worker_count + parameter_server_count must be at "
                                    "least node_count"};
      return;
    }
    plan.launcher = RankLauncher::Processes;
    plan_tensorflow_share(job, context, plan);
  } else if (tensorflow ? tasks <= 1
                        : per_node <= 1 && !(context.share && is_mpi(distributed.communicator))) {
    // One process: unless it is a share of an MPI run across nodes, which mpirun starts however
    // few ranks each node has.
    return;
  } else if (tensorflow) {
    plan.launcher = RankLauncher::Processes;
    plan_tensorflow(job, context, plan);
  } else if (is_mpi(distributed.communicator)) {
    plan.launcher = RankLauncher::Mpirun;
    plan_mpi(job, context, plan, per_node);
  } else {
    plan.launcher = RankLauncher::Processes;
    plan_pytorch(context, plan, per_node);
  }
  plan.std_log = plan.ranks.front().std_log;
  int nodes = context.share ? context.share->node_count() : 1;
  plan.world_size = tensorflow ? tasks : per_node * nodes;
  // The job's own variables are applied last, over everything else, for every rank too.
  for (const auto* variables :
       {&job.environment.environment_variables, &job.environment_variables}) {
    for (const auto& [name, value] : *variables) {
      set_env_var(plan.env, name, value);
      for (auto& rank : plan.ranks) remove_var(rank.env, name);
    }
  }
}

bool port_is_free(int port) {
  // Bound on the wildcard address, a port is taken for every address; the loopback is what the
  // ranks of one node use.
  for (in_addr_t host : {htonl(INADDR_ANY), htonl(INADDR_LOOPBACK)}) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return true;  // nothing can be learnt; 6105 is Azure ML's choice
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = host;
    bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    ::close(fd);
    if (!bound) return false;
  }
  return true;
}

int pick_free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t length = sizeof address;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0)
    port = ntohs(address.sin_port);
  ::close(fd);
  return port;
}

std::optional<int> mpirun_failed_rank(const std::string& mpirun_output) {
  static const std::regex process_name(R"(Process name:\s*\[\[\d+,\d+\],(\d+)\])");
  static const std::regex process_rank(R"(process rank (\d+) with PID)");
  std::smatch match;
  if (std::regex_search(mpirun_output, match, process_name) ||
      std::regex_search(mpirun_output, match, process_rank)) {
    int rank = -1;
    const std::string digits = match[1].str();
    auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), rank);
    if (error == std::errc()) return rank;
  }
  return std::nullopt;
}

void set_launch_vars(Plan& plan, const ShareContext& share) {
  set_env_var(plan.env, "AMLNODE_LAUNCH_URL", share.launch_url);
  set_env_var(plan.env, "AMLNODE_LAUNCH_TOKEN", share.launch_token);
  if (!share.launch_ca_file.empty())
    set_env_var(plan.env, "AMLNODE_LAUNCH_CA_FILE", share.launch_ca_file);
  set_env_var(plan.env, "AMLNODE_NODE_RANK", std::to_string(share.node_rank));
}

}  // namespace amlnode::executors
