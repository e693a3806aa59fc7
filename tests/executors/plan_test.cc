#include "executors/plan.h"

#include <catch2/catch.hpp>

using namespace amlnode;
using executors::EnvironmentKind;
using executors::PlanContext;
using executors::resolve_plan;

namespace {

spec::Job user_managed_job() {
  spec::Job job;
  job.source_directory = "/src/project";
  job.experiment_name = "mnist";
  job.entry_script = "train.py";
  job.arguments = {"--lr", "0.1"};
  job.environment.python.user_managed_dependencies = true;
  return job;
}

PlanContext context() {
  PlanContext c;
  c.run_id = "mnist_1_abcd";
  c.run_dir = "/state/runs/mnist_1_abcd";
  return c;
}

std::string env_of(const executors::Plan& plan, const std::string& name) {
  for (const auto& [n, v] : plan.env) {
    if (n == name) return v;
  }
  return "<unset>";
}

}  // namespace

TEST_CASE("a .py entry script runs under the interpreter with its arguments", "[plan]") {
  auto job = user_managed_job();
  job.environment.python.interpreter_path = "/opt/py/bin/python3";
  auto plan = resolve_plan(job, context());
  CHECK(plan.argv == std::vector<std::string>{"/opt/py/bin/python3", "train.py", "--lr", "0.1"});
  CHECK(plan.working_dir == "/state/runs/mnist_1_abcd/wd");
  CHECK(plan.std_log == "/state/runs/mnist_1_abcd/user_logs/std_log.txt");
  CHECK(plan.environment_kind == EnvironmentKind::UserManaged);
  CHECK_FALSE(plan.cannot_run);
}

TEST_CASE("a command runs through /bin/sh", "[plan]") {
  auto job = user_managed_job();
  job.entry_script.reset();
  job.arguments.clear();
  job.shell_command = "echo hi && exit 3";
  CHECK(resolve_plan(job, context()).argv ==
        std::vector<std::string>{"/bin/sh", "-c", "echo hi && exit 3"});
}

TEST_CASE("the script sees Azure ML's variables, and the job's own come last", "[plan]") {
  auto job = user_managed_job();
  job.node_count = 1;
  job.environment.environment_variables = {{"FROM_ENV_DEF", "1"}, {"SHARED", "environment"}};
  job.environment_variables = {{"SHARED", "job"}, {"AZUREML_NODE_COUNT", "7"}};
  auto plan = resolve_plan(job, context());
  CHECK(env_of(plan, "AZUREML_RUN_ID") == "mnist_1_abcd");
  CHECK(env_of(plan, "AZUREML_ARM_PROJECT_NAME") == "mnist");
  CHECK(env_of(plan, "AZ_BATCH_IS_CURRENT_NODE_MASTER") == "true");
  CHECK(env_of(plan, "AZ_BATCH_MASTER_NODE") == "127.0.0.1:6105");
  CHECK(env_of(plan, "FROM_ENV_DEF") == "1");
  CHECK(env_of(plan, "SHARED") == "job");
  // The job's own variables win, even over the runtime contract, as on Azure ML.
  CHECK(env_of(plan, "AZUREML_NODE_COUNT") == "7");
}

TEST_CASE("inputs and resume_from become data references", "[plan]") {
  auto job = user_managed_job();
  spec::Input train, cache;
  train.name = "train";
  train.path = "/data/train";
  train.mode = spec::InputMode::Download;
  cache.name = "cache";
  cache.path = "/data/cache";
  cache.path_on_compute = "shared/cache";
  job.inputs = {train, cache};
  job.resume_from = "/models/ckpt";
  auto plan = resolve_plan(job, context());
  CHECK(env_of(plan, "AZUREML_DATAREFERENCE_train") == "/state/runs/mnist_1_abcd/inputs/train");
  CHECK(env_of(plan, "AZUREML_DATAREFERENCE_cache") ==
        "/state/runs/mnist_1_abcd/inputs/shared/cache");
  CHECK(env_of(plan, "AZUREML_DATAREFERENCE_MODEL_LOCATION") ==
        "/state/runs/mnist_1_abcd/inputs/MODEL_LOCATION");
  REQUIRE(plan.argv.size() == 6);
  CHECK(plan.argv[4] == "--resume-from");
  CHECK(plan.argv[5] == "/state/runs/mnist_1_abcd/inputs/MODEL_LOCATION");
}

TEST_CASE("distributed frameworks see single-process values", "[plan]") {
  auto job = user_managed_job();
  job.framework = spec::Framework::PyTorch;
  job.distributed.communicator = spec::Communicator::Nccl;
  auto plan = resolve_plan(job, context());
  CHECK(env_of(plan, "MASTER_PORT") == "6105");
  CHECK(env_of(plan, "WORLD_SIZE") == "1");
  CHECK(env_of(plan, "RANK") == "0");
  job.framework = spec::Framework::TensorFlow;
  job.distributed.communicator = spec::Communicator::ParameterServer;
  auto tf = nlohmann::json::parse(env_of(resolve_plan(job, context()), "TF_CONFIG"));
  CHECK(tf["task"]["type"] == "worker");
  CHECK(tf["environment"] == "cloud");
}

TEST_CASE("a conda environment runs the script with the environment's own interpreter", "[plan]") {
  auto job = user_managed_job();
  job.environment.python.user_managed_dependencies = false;
  job.environment.python.conda_packages = {"numpy"};
  auto c = context();
  c.envs_dir = "/state/envs";
  auto plan = resolve_plan(job, c);
  CHECK(plan.environment_kind == EnvironmentKind::Conda);
  CHECK_FALSE(plan.cannot_run);
  REQUIRE(plan.python_environment);
  CHECK(plan.environment_hash == plan.python_environment->hash);
  CHECK(plan.argv.front() == "/state/envs/" + plan.environment_hash + "/bin/python");
  CHECK(plan.argv[1] == "train.py");
}

TEST_CASE("Docker environments pick the CPU or GPU image, overridable by the node", "[plan]") {
  auto job = user_managed_job();
  job.environment.docker.enabled = true;
  job.use_gpu = true;
  job.environment.docker.base_image = spec::kDefaultGpuImage;
  auto docker = resolve_plan(job, context());
  CHECK(docker.environment_kind == EnvironmentKind::Docker);
  CHECK(docker.image == std::string(spec::kDefaultGpuImage));
  auto mirrored = context();
  mirrored.default_gpu_image = "mirror.local/azureml/gpu:1";
  CHECK(resolve_plan(job, mirrored).image == std::string("mirror.local/azureml/gpu:1"));
}

TEST_CASE("the environment hash ignores package order but not versions", "[plan]") {
  auto job = user_managed_job();
  job.environment.python.user_managed_dependencies = false;
  job.environment.python.pip_packages = {"numpy==1.26.0", "pandas==2.1.0"};
  auto first = executors::environment_hash(job, context());
  job.environment.python.pip_packages = {"pandas==2.1.0", "numpy==1.26.0"};
  CHECK(executors::environment_hash(job, context()) == first);
  job.environment.python.pip_packages = {"pandas==2.1.1", "numpy==1.26.0"};
  CHECK(executors::environment_hash(job, context()) != first);
}

TEST_CASE("registry passwords never reach the plan", "[plan]") {
  auto job = user_managed_job();
  job.environment.docker.enabled = true;
  job.environment.docker.base_image = "private.example/team/base:1";
  job.environment.docker.base_image_registry =
      spec::RegistryDetails{"private.example", "robot", "s3cr3t-pa55"};
  auto plan = resolve_plan(job, context());
  CHECK(plan_to_json(plan).dump().find("s3cr3t-pa55") == std::string::npos);
  CHECK(plan_to_text(plan).find("s3cr3t-pa55") == std::string::npos);
}

// ---- a share of a run across nodes ----

namespace {

PlanContext share_context(int node_rank, int master_port = 6105) {
  PlanContext c = context();
  executors::ShareContext share;
  share.node_rank = node_rank;
  share.addresses = {"10.0.0.4", "10.0.0.5"};
  share.master_port = master_port;
  c.share = share;
  c.master_address = "10.0.0.4";
  // The master's port was agreed: nothing of this node is probed.
  c.port_free = [](int) -> bool {
    FAIL("a share probes no port");
    return false;
  };
  return c;
}

std::string rank_env(const executors::RankPlan& rank, const executors::Plan& plan,
                     const std::string& name) {
  for (const auto& [n, v] : rank.env)
    if (n == name) return v;
  return env_of(plan, name);
}

}  // namespace

TEST_CASE("a share of a PyTorch run across nodes numbers its ranks after the nodes before it",
          "[plan][gang]") {
  auto job = user_managed_job();
  job.framework = spec::Framework::PyTorch;
  job.distributed.communicator = spec::Communicator::Gloo;
  job.distributed.process_count_per_node = 2;
  job.node_count = 2;
  auto plan = resolve_plan(job, share_context(1, 29555));
  REQUIRE_FALSE(plan.cannot_run);
  REQUIRE(plan.ranks.size() == 2);
  CHECK(plan.ranks[0].rank == 2);
  CHECK(plan.ranks[1].rank == 3);
  CHECK(plan.ranks[1].local_rank == 1);
  CHECK(plan.ranks[1].std_log.filename() == "std_log_process_03.txt");
  CHECK(rank_env(plan.ranks[1], plan, "RANK") == "3");
  CHECK(rank_env(plan.ranks[1], plan, "LOCAL_RANK") == "1");
  CHECK(rank_env(plan.ranks[1], plan, "AZUREML_PROCESS_NAME") == "rank_3");
  CHECK(env_of(plan, "WORLD_SIZE") == "4");
  CHECK(env_of(plan, "NODE_RANK") == "1");
  CHECK(env_of(plan, "MASTER_ADDR") == "10.0.0.4");
  CHECK(env_of(plan, "MASTER_PORT") == "29555");
  CHECK(env_of(plan, "AZ_BATCH_MASTER_NODE") == "10.0.0.4:29555");
  CHECK(env_of(plan, "AZ_BATCH_IS_CURRENT_NODE_MASTER") == "false");
  CHECK(env_of(plan, "AZ_BATCH_HOST_LIST") == "10.0.0.4,10.0.0.5");
  CHECK(env_of(plan, "AZ_BATCH_NODE_LIST") == "10.0.0.4;10.0.0.5");
  CHECK(env_of(plan, "AZUREML_NODE_COUNT") == "2");
  // Shares of one run may meet on one Docker daemon: their containers are keyed apart.
  CHECK(plan.container_key == "mnist_1_abcd.node_01");
  auto master = resolve_plan(job, share_context(0));
  CHECK(env_of(master, "AZ_BATCH_IS_CURRENT_NODE_MASTER") == "true");
  CHECK(master.container_key == "mnist_1_abcd.node_00");
  CHECK(resolve_plan(user_managed_job(), context()).container_key == "mnist_1_abcd");
  CHECK(master.ranks[0].rank == 0);
}

TEST_CASE("a share running one process per node is the node's launcher or worker", "[plan][gang]") {
  auto job = user_managed_job();
  job.framework = spec::Framework::PyTorch;
  job.distributed.communicator = spec::Communicator::Nccl;
  job.node_count = 2;
  auto plan = resolve_plan(job, share_context(1));
  REQUIRE_FALSE(plan.cannot_run);
  CHECK(plan.ranks.empty());
  CHECK(env_of(plan, "WORLD_SIZE") == "2");
  CHECK(env_of(plan, "NODE_RANK") == "1");
  CHECK(env_of(plan, "RANK") == "1");
  CHECK(env_of(plan, "MASTER_ADDR") == "10.0.0.4");
}

TEST_CASE("a TensorFlow run across nodes deals its tasks out over the nodes", "[plan][gang]") {
  auto job = user_managed_job();
  job.framework = spec::Framework::TensorFlow;
  job.distributed.communicator = spec::Communicator::ParameterServer;
  job.distributed.worker_count = 2;
  job.distributed.parameter_server_count = 1;
  job.node_count = 2;
  auto first = resolve_plan(job, share_context(0));
  auto second = resolve_plan(job, share_context(1));
  REQUIRE_FALSE(first.cannot_run);
  REQUIRE(first.ranks.size() == 2);   // worker 0 and the parameter server
  REQUIRE(second.ranks.size() == 1);  // worker 1
  auto tf = nlohmann::json::parse(rank_env(second.ranks[0], second, "TF_CONFIG"));
  CHECK(tf["cluster"]["worker"] == nlohmann::json({"10.0.0.4:6105", "10.0.0.5:6105"}));
  CHECK(tf["cluster"]["ps"] == nlohmann::json({"10.0.0.4:6106"}));
  CHECK(tf["task"] == nlohmann::json({{"type", "worker"}, {"index", 1}}));
  auto ps = nlohmann::json::parse(rank_env(first.ranks[1], first, "TF_CONFIG"));
  CHECK(ps["task"] == nlohmann::json({{"type", "ps"}, {"index", 0}}));
  CHECK(ps["cluster"] == tf["cluster"]);
  // Fewer tasks than nodes leaves a node with nothing to run: refused.
  job.distributed.worker_count = 1;
  job.distributed.parameter_server_count = 0;
  auto refused = resolve_plan(job, share_context(1));
  REQUIRE(refused.cannot_run);
  CHECK_THAT(refused.cannot_run->message, Catch::Contains("cannot fill 2 nodes"));
}

TEST_CASE("an MPI run across nodes: mpirun on the master, the agent's daemon host on the others",
          "[plan][gang]") {
  auto job = user_managed_job();
  job.framework = spec::Framework::Python;
  job.distributed.communicator = spec::Communicator::OpenMpi;
  job.distributed.process_count_per_node = 2;
  job.node_count = 2;
  auto with_launcher = [](int node_rank) {
    auto c = share_context(node_rank);
    c.share->launch_url = "http://10.0.0.1:8631";
    c.share->launch_token = "amllaunch_1_ab";
    c.share->agent_program = "/usr/bin/amlnode";
    return c;
  };
  auto master = resolve_plan(job, with_launcher(0));
  REQUIRE_FALSE(master.cannot_run);
  CHECK(master.launcher == executors::RankLauncher::Mpirun);
  std::vector<std::string> head(master.argv.begin(), master.argv.begin() + 9);
  CHECK(head == std::vector<std::string>{"mpirun", "-np", "4", "--host", "localhost:2,10.0.0.5:2",
                                         "--mca", "plm_rsh_agent", "/usr/bin/amlnode mpi-rsh",
                                         "--oversubscribe"});
  CHECK(env_of(master, "AMLNODE_LAUNCH_URL") == "http://10.0.0.1:8631");
  CHECK(env_of(master, "AMLNODE_LAUNCH_TOKEN") == "amllaunch_1_ab");
  CHECK(env_of(master, "AMLNODE_NODE_RANK") == "0");
  CHECK(master.world_size == 4);
  auto other = resolve_plan(job, with_launcher(1));
  REQUIRE_FALSE(other.cannot_run);
  CHECK(other.argv == std::vector<std::string>{"/usr/bin/amlnode", "mpi-host"});
  CHECK(other.hosts_mpi_daemon);
  CHECK_FALSE(master.hosts_mpi_daemon);
  CHECK(other.launcher_log == other.run_dir / "user_logs" / "mpi_log.txt");
  REQUIRE(other.ranks.size() == 2);
  CHECK(other.ranks[0].rank == 2);
  CHECK(other.ranks[1].std_log.filename() == "std_log_process_03.txt");
  CHECK(env_of(other, "AMLNODE_NODE_RANK") == "1");
  CHECK(env_of(other, "AMLNODE_RANK_WORK_DIR") == other.working_dir.string());
  // One rank per node is still mpirun's to start.
  job.distributed.process_count_per_node = 1;
  auto single = resolve_plan(job, with_launcher(0));
  CHECK(single.launcher == executors::RankLauncher::Mpirun);
  CHECK(single.argv[4] == "localhost:1,10.0.0.5:1");
}

TEST_CASE("a share refuses what it cannot run across nodes, naming the field", "[plan][gang]") {
  auto job = user_managed_job();
  job.framework = spec::Framework::Python;
  job.distributed.communicator = spec::Communicator::OpenMpi;
  job.distributed_field = "distributed_job_config";
  job.distributed.process_count_per_node = 2;
  job.node_count = 2;
  // MPI across nodes needs the epoch's launch token (an older control plane gives none) ...
  auto mpi = resolve_plan(job, share_context(0));
  REQUIRE(mpi.cannot_run);
  CHECK(mpi.cannot_run->message ==
        "distributed_job_config: MPI runs across nodes (node_count 2) need the control plane's "
        "launch token, which this lease did not carry (a control plane older than this agent)");
  // ... and cannot run in Docker, whose containers cannot reach the agent's launcher.
  auto with_token = share_context(0);
  with_token.share->launch_token = "amllaunch_1_ab";
  with_token.share->agent_program = "/usr/bin/amlnode";
  job.environment.docker.enabled = true;
  auto docker = resolve_plan(job, with_token);
  REQUIRE(docker.cannot_run);
  CHECK_THAT(docker.cannot_run->message, Catch::Contains("environment.docker.enabled: false"));
  job.environment.docker.enabled = false;
  // mpirun starts its daemons by address: two nodes at one address cannot be told apart.
  auto same_address = with_token;
  same_address.share->addresses = {"10.0.0.4", "10.0.0.4"};
  auto shared = resolve_plan(job, same_address);
  REQUIRE(shared.cannot_run);
  CHECK_THAT(shared.cannot_run->message,
             Catch::Contains("node ranks 0 and 1 are both at 10.0.0.4 (set node.address"));
  // A lease naming more nodes than the job asks for.
  job.distributed.communicator = spec::Communicator::Gloo;
  job.framework = spec::Framework::PyTorch;
  job.node_count = 3;
  auto mismatch = resolve_plan(job, share_context(0));
  REQUIRE(mismatch.cannot_run);
  CHECK(mismatch.cannot_run->message ==
        "distributed_job_config: node_count is 3 but this share's lease names 2 nodes");
  // Without a share (amlnode run), a run across nodes is refused up front.
  auto local = resolve_plan(job, context());
  REQUIRE(local.cannot_run);
  CHECK_THAT(local.cannot_run->message, Catch::Contains("runs only as a gang"));
}

// ---- ParallelRunStep ----

namespace {

spec::Job parallel_job() {
  auto job = user_managed_job();
  job.parallel_run = spec::ParallelRun{};
  job.parallel_run->error_threshold = 0;
  job.parallel_run->process_count_per_node = 2;
  spec::Input input;
  input.name = "images";
  input.path = "/data/images";
  input.dataset = true;
  job.inputs.push_back(input);
  return job;
}

}  // namespace

TEST_CASE("a ParallelRunStep's share across nodes reaches the control plane under its epoch",
          "[plan][parallel]") {
  auto job = parallel_job();
  job.node_count = 2;
  auto context = share_context(1);
  context.agent_program = "/usr/bin/amlnode";
  context.share->launch_url = "http://10.0.0.1:8080";
  context.share->launch_token = "amllaunch_1_abc";
  auto plan = resolve_plan(job, context);
  REQUIRE_FALSE(plan.cannot_run);
  CHECK(plan.argv == std::vector<std::string>{"/usr/bin/amlnode", "parallel-node"});
  CHECK(env_of(plan, "AMLNODE_LAUNCH_URL") == "http://10.0.0.1:8080");
  CHECK(env_of(plan, "AMLNODE_LAUNCH_TOKEN") == "amllaunch_1_abc");
  CHECK(env_of(plan, "AMLNODE_NODE_RANK") == "1");
  // Without a launch token there is no control plane to take mini-batches from.
  context.share->launch_token.clear();
  auto refused = resolve_plan(job, context);
  REQUIRE(refused.cannot_run);
  CHECK_THAT(refused.cannot_run->message, Catch::Contains("no launch token"));
}

TEST_CASE("a ParallelRunStep in a container runs the static driver bound into it",
          "[plan][parallel]") {
  auto job = parallel_job();
  job.environment.docker.enabled = true;
  auto c = context();
  c.agent_program = "/usr/bin/amlnode";
  auto missing = resolve_plan(job, c);
  REQUIRE(missing.cannot_run);
  CHECK_THAT(missing.cannot_run->message, Catch::Contains("amlnode-parallel-node"));
  c.parallel_driver = "/usr/bin/amlnode-parallel-node";
  auto plan = resolve_plan(job, c);
  REQUIRE_FALSE(plan.cannot_run);
  CHECK(plan.argv == std::vector<std::string>{"/usr/bin/amlnode-parallel-node"});
  CHECK(plan.host_files == std::vector<std::filesystem::path>{"/usr/bin/amlnode-parallel-node"});
  CHECK(env_of(plan, "AMLNODE_PRS_SPEC") != "<unset>");
  job.node_count = 2;
  auto across = share_context(0);
  across.parallel_driver = c.parallel_driver;
  across.agent_program = c.agent_program;
  across.share->launch_token = "amllaunch_1_abc";
  across.share->launch_ca_file = "/etc/amlnode/ca.pem";
  auto share = resolve_plan(job, across);
  REQUIRE_FALSE(share.cannot_run);
  // Across nodes it reaches the control plane from the container, trusting the agent's CA file.
  CHECK(share.host_files == std::vector<std::filesystem::path>{"/usr/bin/amlnode-parallel-node",
                                                               "/etc/amlnode/ca.pem"});
  CHECK(env_of(share, "AMLNODE_LAUNCH_TOKEN") == "amllaunch_1_abc");
  CHECK(env_of(share, "AMLNODE_LAUNCH_CA_FILE") == "/etc/amlnode/ca.pem");
}

// ---- PySpark ----

TEST_CASE("PySpark runs only on a node attached as HDInsight, through the agent's spark-submit",
          "[plan][pyspark]") {
  auto job = user_managed_job();
  job.framework = spec::Framework::PySpark;
  auto c = context();
  c.agent_program = "/usr/bin/amlnode";
  auto refused = resolve_plan(job, c);
  REQUIRE(refused.cannot_run);
  CHECK(refused.cannot_run->message ==
        "framework: PySpark runs on a node attached as HDInsight (amlnode attach --kind "
        "hdinsight), through its spark-submit; this node is not one");
  c.compute_kind = "remote";
  CHECK_THAT(resolve_plan(job, c).cannot_run->message, Catch::EndsWith("attached as remote"));
  c.compute_kind = "hdinsight";
  CHECK_THAT(resolve_plan(job, c).cannot_run->message,
             Catch::Contains("spark-submit and yarn are not on this node's PATH"));
  c.spark_submit = "/usr/bin/spark-submit";
  c.yarn = "/usr/bin/yarn";
  auto plan = resolve_plan(job, c);
  REQUIRE_FALSE(plan.cannot_run);
  REQUIRE(plan.argv.size() > 4);
  CHECK(plan.argv[0] == "/usr/bin/amlnode");
  CHECK(plan.argv[1] == "spark-submit");
  CHECK(plan.argv[2] == "--spark-submit");
  CHECK(plan.argv[3] == "/usr/bin/spark-submit");
  CHECK(plan.argv[9] == "--deploy-mode");
  CHECK(plan.argv[10] == "cluster");
  // Stopping it kills a YARN application first: a minute's grace at least.
  CHECK(plan.kill_grace_seconds >= 60);
  CHECK(plan.argv[plan.argv.size() - 3] == "train.py");
  // In a Docker container, or across nodes, it is refused: YARN runs its executors.
  job.environment.docker.enabled = true;
  CHECK_THAT(resolve_plan(job, c).cannot_run->message,
             Catch::StartsWith("environment.docker.enabled"));
  job.environment.docker.enabled = false;
  job.node_count = 2;
  CHECK_THAT(resolve_plan(job, c).cannot_run->message, Catch::StartsWith("node_count"));
}
