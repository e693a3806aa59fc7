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
