#include "executors/plan.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <sstream>

#include "common/hash.h"
#include "executors/batch_task.h"
#include "executors/ranks.h"
#include "parallel/node_driver.h"

namespace amlnode::executors {
namespace {

using spec::Communicator;
using spec::Framework;
using spec::Job;

void set_var(spec::EnvVars& env, const std::string& name, const std::string& value) {
  auto it = std::find_if(env.begin(), env.end(), [&](const auto& kv) { return kv.first == name; });
  if (it != env.end()) {
    it->second = value;
  } else {
    env.emplace_back(name, value);
  }
}

EnvironmentKind kind_of(const Job& job) {
  const auto& python = job.environment.python;
  if (job.environment.docker.enabled) return EnvironmentKind::Docker;
  if (python.user_managed_dependencies) return EnvironmentKind::UserManaged;
  if (python.conda_packages.empty() && !python.conda_dependencies_file) return EnvironmentKind::Pip;
  return EnvironmentKind::Conda;
}

std::optional<std::string> base_image_of(const Job& job, const PlanContext& context) {
  const auto& docker = job.environment.docker;
  if (!docker.enabled || docker.base_dockerfile) return std::nullopt;
  if (!docker.base_image.empty() && docker.base_image != spec::kDefaultCpuImage &&
      docker.base_image != spec::kDefaultGpuImage) {
    return docker.base_image;
  }
  bool gpu = job.use_gpu || docker.base_image == spec::kDefaultGpuImage;
  return gpu ? context.default_gpu_image : context.default_cpu_image;
}

std::vector<std::string> entry_argv(const Job& job) {
  std::vector<std::string> argv;
  if (job.shell_command) {
    argv = {"/bin/sh", "-c", *job.shell_command};
    return argv;
  }
  if (job.entry_script) {
    const std::string& script = *job.entry_script;
    auto ends_with = [&](std::string_view suffix) {
      return script.size() >= suffix.size() &&
             script.compare(script.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (ends_with(".py")) {
      argv = {job.environment.python.interpreter_path, script};
    } else if (ends_with(".sh")) {
      argv = {"/bin/bash", script};
    } else {
      argv = {"./" + script};
    }
  }
  argv.insert(argv.end(), job.arguments.begin(), job.arguments.end());
  return argv;
}

// Inputs are staged into `inputs_dir`: the run folder's inputs/, a Batch task's own folder's.
std::vector<StagedInput> staged_inputs(const Job& job, const std::filesystem::path& inputs_dir) {
  std::vector<StagedInput> inputs;
  for (const auto& input : job.inputs) {
    StagedInput staged{input.name, input.path, {}, input.mode};
    if (input.mode == spec::InputMode::Upload) {
      // An upload reference is where the run writes results; locally that is the path itself.
      staged.target = input.path;
    } else if (std::filesystem::path(input.path_on_compute).is_absolute()) {
      staged.target = input.path_on_compute;
      staged.outside_run_folder = true;
    } else {
      staged.target =
          inputs_dir / (input.path_on_compute.empty() ? input.name : input.path_on_compute);
    }
    inputs.push_back(std::move(staged));
  }
  if (job.resume_from) {
    inputs.push_back({"MODEL_LOCATION", *job.resume_from, inputs_dir / "MODEL_LOCATION",
                      spec::InputMode::Mount});
  }
  return inputs;
}

std::vector<StagedInput> staged_models(const Job& job, const PlanContext& context) {
  std::vector<StagedInput> models;
  for (const auto& model : job.models) {
    std::filesystem::path source = model.path;
    models.push_back({"model " + model.name, source,
                      context.run_dir / "models" / model.name / std::to_string(model.version) /
                          source.filename(),
                      spec::InputMode::Mount});
  }
  return models;
}

// The run context file's contents (docs/sdk-compat.md): what the run is, where its files are,
// and what its datasets and models are.
nlohmann::json run_context_of(const Job& job, const Plan& plan) {
  nlohmann::json datasets = nlohmann::json::object();
  for (std::size_t i = 0; i < job.inputs.size() && i < plan.inputs.size(); ++i) {
    const spec::Input& input = job.inputs[i];
    nlohmann::json entry = {{"kind", spec::to_string(input.kind)},
                            {"path", plan.inputs[i].target.string()}};
    if (input.kind == spec::DatasetKind::Tabular) {
      entry["format"] = spec::to_string(input.format);
      if (input.format == spec::TabularFormat::Delimited)
        entry["options"] = {{"separator", input.separator}, {"header", input.header}};
    }
    datasets[input.name] = entry;
  }
  nlohmann::json models = nlohmann::json::object();
  for (std::size_t i = 0; i < job.models.size() && i < plan.models.size(); ++i) {
    models[job.models[i].name] = {{"path", plan.models[i].target.string()},
                                  {"version", job.models[i].version}};
  }
  return {{"run_id", plan.run_id},
          {"experiment", plan.experiment_name},
          {"parent_run_id", nullptr},
          {"working_dir", plan.working_dir.string()},
          {"outputs_dir", (plan.working_dir / "outputs").string()},
          {"logs_dir", (plan.working_dir / "logs").string()},
          {"metrics_file", (plan.system_logs / "metrics.jsonl").string()},
          {"tags_file", (plan.system_logs / "tags.jsonl").string()},
          {"status_file", (plan.system_logs / "script_status.json").string()},
          {"input_datasets", datasets},
          {"models", models},
          {"node_count", job.node_count},
          {"process_name", "process000"},
          {"target", job.compute_target}};
}

// A dataset's placeholder as the SDK writes it into arguments, and the data reference variables
// of the run's own contract, become the staged paths; what a placeholder names must exist.
// A Batch task's arguments are not under a shell: only the data references become paths there,
// and every other `$` word reaches the executable as written.
Result<std::string> substitute_placeholders(const std::string& arg, const Plan& plan) {
  static constexpr std::string_view kDataset = "DatasetConsumptionConfig:";
  std::string out;
  std::size_t at = 0;
  while (at < arg.size()) {
    if (arg.compare(at, kDataset.size(), kDataset) == 0) {
      std::size_t end = at + kDataset.size();
      while (end < arg.size() &&
             (std::isalnum(static_cast<unsigned char>(arg[end])) || arg[end] == '_'))
        ++end;
      std::string name = arg.substr(at + kDataset.size(), end - at - kDataset.size());
      auto input = std::find_if(plan.inputs.begin(), plan.inputs.end(),
                                [&](const StagedInput& staged) { return staged.name == name; });
      if (input == plan.inputs.end())
        return Error{"UnknownInput", "the argument " + arg + " names dataset \"" + name +
                                         "\", which is not among the job's inputs"};
      out += input->target.string();
      at = end;
      continue;
    }
    if (arg[at] == '$') {
      bool braced = at + 1 < arg.size() && arg[at + 1] == '{';
      std::size_t start = at + (braced ? 2 : 1);
      std::size_t end = start;
      while (end < arg.size() &&
             (std::isalnum(static_cast<unsigned char>(arg[end])) || arg[end] == '_'))
        ++end;
      std::string name = arg.substr(start, end - start);
      bool closed = !braced || (end < arg.size() && arg[end] == '}');
      bool ours =
          name.starts_with("AZUREML_DATAREFERENCE_") ||
          (!plan.batch && (name.starts_with("AZ_BATCHAI_") || name.starts_with("AZ_BATCH_")));
      if (ours && closed) {
        auto var = std::find_if(plan.env.begin(), plan.env.end(),
                                [&](const auto& kv) { return kv.first == name; });
        if (var == plan.env.end())
          return Error{"UnknownInput", "the argument " + arg + " refers to $" + name +
                                           ", which this run does not have (no such input)"};
        out += var->second;
        at = end + (braced ? 1 : 0);
        continue;
      }
    }
    out += arg[at++];
  }
  return out;
}

// A ParallelRunStep: the run's process is the agent's `parallel-node`, which starts the workers
// (parallel/node_driver.h); what it needs goes to it as $AMLNODE_PRS_SPEC.
void plan_parallel_run(const Job& job, const PlanContext& context, Plan& plan) {
  const spec::ParallelRun& run = *job.parallel_run;
  parallel::NodeSpec spec;
  // The interpreter the job's script would run with: its environment's for conda and pip.
  spec.python = job.environment.python.interpreter_path;
  if (plan.python_environment)
    spec.python = (context.envs_dir / plan.environment_hash / "bin" / "python").string();
  std::string script = run.entry_script.empty() ? job.entry_script.value_or("") : run.entry_script;
  if (script.empty()) {
    plan.cannot_run = Error{"InvalidJob",
                            "parallel_run.entry_script: a ParallelRunStep needs an "
                            "entry script with init() and run(mini_batch)"};
    return;
  }
  spec.entry_script = plan.working_dir / script;
  // The job's arguments are the entry script's, with the staged inputs' paths put in.
  for (const auto& argument : job.arguments) {
    auto substituted = substitute_placeholders(argument, plan);
    if (!substituted.ok()) {
      plan.cannot_run = substituted.error();
      return;
    }
    spec.arguments.push_back(*substituted);
  }
  auto is_side = [&](const std::string& name) {
    return std::find(run.side_inputs.begin(), run.side_inputs.end(), name) != run.side_inputs.end();
  };
  for (const auto& name : run.side_inputs) {
    bool known = std::any_of(job.inputs.begin(), job.inputs.end(),
                             [&](const spec::Input& input) { return input.name == name; });
    if (!known) {
      plan.cannot_run = Error{"InvalidJob", "parallel_run.side_inputs: \"" + name +
                                                "\" is not one of the job's inputs"};
      return;
    }
  }
  for (std::size_t i = 0; i < job.inputs.size() && i < plan.inputs.size(); ++i) {
    const spec::Input& input = job.inputs[i];
    if (input.mode == spec::InputMode::Upload || is_side(input.name)) continue;
    parallel::NodeInput node_input;
    node_input.name = input.name;
    node_input.path = plan.inputs[i].target;
    bool table = input.dataset && input.kind == spec::DatasetKind::Tabular;
    node_input.kind = table ? parallel::InputKind::Table : parallel::InputKind::Files;
    node_input.format = input.format == spec::TabularFormat::JsonLines ? "json_lines"
                        : input.format == spec::TabularFormat::Parquet ? "parquet"
                                                                       : "delimited";
    node_input.separator = input.separator;
    node_input.header = input.header;
    if (!spec.inputs.empty() && spec.inputs.front().kind != node_input.kind) {
      plan.cannot_run = Error{"InvalidJob", "inputs." + input.name +
                                                ": a ParallelRunStep's inputs are all file "
                                                "datasets or all tabular ones"};
      return;
    }
    spec.inputs.push_back(std::move(node_input));
  }
  if (spec.inputs.empty()) {
    plan.cannot_run = Error{"InvalidJob",
                            "inputs: a ParallelRunStep needs an input to split into "
                            "mini-batches (side_inputs and upload outputs are not)"};
    return;
  }
  if (!run.partition_keys.empty()) {
    if (run.partition_format.empty()) {
      plan.cannot_run = Error{"InvalidJob",
                              "parallel_run.partition_format: partition_keys need "
                              "the input's partition_format"};
      return;
    }
    spec.partition_keys = run.partition_keys;
    spec.partition_format = run.partition_format;
  }
  if (run.mini_batch_size) {
    auto size = parallel::parse_mini_batch_size(*run.mini_batch_size, spec.inputs.front().kind);
    if (!size.ok()) {
      plan.cannot_run = Error{"InvalidJob", "parallel_run." + size.error().message};
      return;
    }
    spec.mini_batch_size = run.mini_batch_size;
  }
  if (run.process_count_per_node) {
    spec.workers = *run.process_count_per_node;
  } else {
    spec.workers = std::max(1, context.gpus > 0 ? context.gpus : context.cpus);
    plan.notes.push_back("process_count_per_node is " + std::to_string(spec.workers) +
                         ": this node's " + (context.gpus > 0 ? "GPU" : "CPU") +
                         " count (ParallelRunConfig's default)");
  }
  spec.rules.run_max_try = run.run_max_try;
  spec.rules.error_threshold = run.error_threshold;
  spec.rules.allowed_failed_count = run.allowed_failed_count;
  spec.rules.allowed_failed_percent = run.allowed_failed_percent;
  spec.append_rows = run.output_action == spec::OutputAction::AppendRow;
  spec.rules.count_missing_rows = spec.append_rows;
  spec.run_invocation_timeout = run.run_invocation_timeout;
  spec.append_row_file_name = run.append_row_file_name;
  spec.logging_level = run.logging_level;
  spec.outputs_dir = plan.working_dir / "outputs";
  spec.logs_dir = plan.working_dir / "logs";
  spec.state_dir = plan.run_dir / "parallel";
  plan.argv = {context.agent_program.string(), "parallel-node"};
  if (job.environment.docker.enabled) {
    // In a container the driver is the static one, bound into it: the agent's program needs the
    // host's C library.
    plan.argv = {context.parallel_driver.string()};
    plan.host_files.push_back(context.parallel_driver);
    // Across nodes it reaches the control plane from there (the container shares the host's
    // network), trusting the CA file the agent trusts.
    if (context.share && !context.share->launch_ca_file.empty())
      plan.host_files.push_back(context.share->launch_ca_file);
  }
  set_var(plan.env, "AMLNODE_PRS_SPEC", parallel::node_spec_json(spec).dump());
  // Across nodes the mini-batches come from the control plane, under the run's epoch.
  if (context.share && context.share->node_count() > 1) set_launch_vars(plan, *context.share);
  plan.error_file = spec.state_dir / "error.json";
}

// A PySpark run on an HDInsight node (docs/hdinsight.md): spark-submit to YARN as the SDK's
// settings say, through the agent's `spark-submit` wrapper, which learns the YARN application's
// id, kills the application on a cancel or the deadline, and brings its driver's log back.
void plan_pyspark(const Job& job, const PlanContext& context, Plan& plan) {
  auto refuse = [&](const std::string& message) { plan.cannot_run = Error{"InvalidJob", message}; };
  std::string script = job.entry_script.value_or("");
  if (script.size() < 3 || script.compare(script.size() - 3, 3, ".py") != 0 || plan.argv.size() < 2)
    return refuse("framework: a PySpark run submits a .py script (script:)");
  if (context.spark_submit.empty() || context.yarn.empty())
    return refuse("framework: PySpark: spark-submit and yarn are not on this node's PATH");
  auto given = [&](const std::string& key) {
    for (const auto& [name, value] : job.spark.configuration)
      if (name == key) return true;
    return false;
  };
  // Without waiting for the application, spark-submit would end at once: the run would say
  // Completed while the application runs on, beyond a cancel's reach.
  for (const auto& [key, value] : job.spark.configuration)
    if (key == "spark.yarn.submit.waitAppCompletion" && value != "true")
      return refuse(
          "spark.configuration.spark.yarn.submit.waitAppCompletion: a run ends when "
          "its application does; only true");
  bool cluster = job.spark.yarn_deploy_mode == "cluster";
  // A conda or pip environment is built on this node only: its interpreter exists nowhere else.
  // The driver runs elsewhere in cluster mode, so there it needs an interpreter every node has.
  bool built_here = plan.python_environment.has_value();
  bool interpreter_given = given("spark.pyspark.python") || given("spark.pyspark.driver.python");
  if (cluster && built_here && !interpreter_given)
    return refuse(
        "environment.python: a conda or pip environment is built on this node only, and in "
        "cluster mode the driver runs on another node of the cluster: use "
        "userManagedDependencies with an interpreter every node has (interpreterPath), set "
        "spark.pyspark.python in spark.configuration, or hdi.yarnDeployMode client");
  std::string python = plan.argv.front();
  std::vector<std::string> argv = {context.agent_program.string(),
                                   "spark-submit",
                                   "--spark-submit",
                                   context.spark_submit.string(),
                                   "--yarn",
                                   context.yarn.string(),
                                   "--",
                                   "--master",
                                   "yarn",
                                   "--deploy-mode",
                                   job.spark.yarn_deploy_mode};
  auto conf = [&](const std::string& key, const std::string& value) {
    argv.push_back("--conf");
    argv.push_back(key + "=" + value);
  };
  // Azure ML's defaults first; the job's configuration after, so it wins where it says otherwise.
  if (!given("spark.app.name")) conf("spark.app.name", "Azure ML Experiment");
  if (!given("spark.yarn.maxAppAttempts")) conf("spark.yarn.maxAppAttempts", "1");
  if (!interpreter_given) {
    // The driver's interpreter; the executors' too, unless it is this node's own environment.
    if (!built_here) conf("spark.pyspark.python", python);
    conf("spark.pyspark.driver.python", python);
    if (cluster) conf("spark.yarn.appMasterEnv.PYSPARK_PYTHON", python);
  }
  for (const auto& [key, value] : job.spark.configuration) conf(key, value);
  auto joined = [](const std::vector<std::string>& items) {
    std::string out;
    for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
    return out;
  };
  if (!job.environment.spark.packages.empty()) {
    argv.push_back("--packages");
    argv.push_back(joined(job.environment.spark.packages));
  }
  if (!job.environment.spark.repositories.empty()) {
    argv.push_back("--repositories");
    argv.push_back(joined(job.environment.spark.repositories));
  }
  // The script and its arguments, as the single-process plan had them after the interpreter.
  argv.insert(argv.end(), plan.argv.begin() + 1, plan.argv.end());
  plan.argv = std::move(argv);
  // Killing the application in YARN takes a JVM's start and the ResourceManager's answer: the stop
  // waits at least a minute before it kills what is left.
  plan.kill_grace_seconds = std::max(plan.kill_grace_seconds, 60.0);
}

// What this node cannot run yet, named by the field that asks for it, so a run never starts
// doing less than its job says.
std::optional<Error> not_yet_supported(const Job& job, const PlanContext& context) {
  auto refuse = [](const std::string& what) { return Error{"NotSupported", what}; };
  if (job.parallel_run) {
    if (job.node_count > 1 && context.share && context.share->launch_token.empty())
      return refuse(
          "parallel_run.node_count: a ParallelRunStep across nodes takes its "
          "mini-batches from the control plane, which gave this share no launch token");
    if (job.environment.docker.enabled && context.parallel_driver.empty())
      return refuse(
          "parallel_run: a ParallelRunStep in a Docker container needs amlnode-parallel-node "
          "beside this node's amlnode, which is missing");
    if (context.agent_program.empty())
      return refuse("parallel_run: this node's agent did not say where its program is");
  }
  if (job.framework == Framework::PySpark) {
    if (context.compute_kind != "hdinsight")
      return refuse(
          "framework: PySpark runs on a node attached as HDInsight (amlnode attach "
          "--kind hdinsight), through its spark-submit; this node is " +
          (context.compute_kind.empty() ? std::string("not one")
                                        : "attached as " + context.compute_kind));
    if (job.environment.docker.enabled)
      return refuse(
          "environment.docker.enabled: a PySpark run uses the HDInsight cluster's Spark "
          "and YARN, not a Docker container");
    if (job.node_count > 1 || job.distributed.process_count_per_node > 1)
      return refuse(
          "node_count: a PySpark run's nodes are YARN's executors; it runs as one "
          "submission (spark.executor.instances sets how many)");
    if (context.agent_program.empty())
      return refuse("framework: PySpark: this node's agent did not say where its program is");
  }
  std::string field = job.distributed_field.empty() ? "node_count" : job.distributed_field;
  if (job.node_count > 1 && !context.share) {
    return refuse(field + ": a run across nodes (node_count " + std::to_string(job.node_count) +
                  ") runs only as a gang leased by a control plane (amlnode submit); amlnode run "
                  "runs one node");
  }
  if (context.share && context.share->node_count() != job.node_count) {
    return refuse(field + ": node_count is " + std::to_string(job.node_count) +
                  " but this share's lease names " + std::to_string(context.share->node_count()) +
                  " nodes");
  }
  auto communicator = job.distributed.communicator;
  bool mpi = communicator == Communicator::OpenMpi || communicator == Communicator::IntelMpi ||
             communicator == Communicator::Mpi;
  if (context.share && mpi) {
    std::string across =
        field + ": MPI runs across nodes (node_count " + std::to_string(job.node_count) + ") ";
    if (job.environment.docker.enabled)
      return refuse(across +
                    "start Open MPI's daemons through this node's agent, which a Docker "
                    "container cannot reach; run them in a conda or user-managed environment "
                    "(environment.docker.enabled: false)");
    if (context.share->launch_token.empty() || context.share->agent_program.empty())
      return refuse(across +
                    "need the control plane's launch token, which this lease did not "
                    "carry (a control plane older than this agent)");
    const auto& addresses = context.share->addresses;
    for (std::size_t a = 0; a < addresses.size(); ++a) {
      for (std::size_t b = a + 1; b < addresses.size(); ++b) {
        if (addresses[a] == addresses[b])
          return refuse(across +
                        "need every node at an address of its own (mpirun starts its "
                        "daemons by address), and node ranks " +
                        std::to_string(a) + " and " + std::to_string(b) + " are both at " +
                        addresses[a] + " (set node.address in each agent's config)");
      }
    }
    if (context.share->agent_program.string().find_first_of(" \t\n") != std::string::npos)
      return refuse(across + "start daemons through the agent's program, and its path " +
                    context.share->agent_program.string() +
                    " has a space, which Open MPI's plm_rsh_agent cannot carry");
  }
  return std::nullopt;
}

// Single-process values of the distributed contract, so a script written for MPI, PyTorch or
// TensorFlow distribution runs unchanged as one worker.
void add_distributed_vars(spec::EnvVars& env, const Job& job, const PlanContext& context) {
  switch (job.distributed.communicator) {
    case Communicator::OpenMpi:
    case Communicator::IntelMpi:
    case Communicator::Mpi:
      set_var(env, "OMPI_COMM_WORLD_RANK", "0");
      set_var(env, "OMPI_COMM_WORLD_SIZE", "1");
      set_var(env, "OMPI_COMM_WORLD_LOCAL_RANK", "0");
      set_var(env, "OMPI_COMM_WORLD_LOCAL_SIZE", "1");
      set_var(env, "AZ_BATCHAI_MPI_MASTER_NODE", context.master_address);
      break;
    default:
      break;
  }
  // A share of a run across nodes runs one process per node here: the per-node launcher, or the
  // node's one worker, its world the nodes.
  int node_rank = context.share ? context.share->node_rank : 0;
  int nodes = context.share ? context.share->node_count() : 1;
  int port = context.share ? context.share->master_port : kMasterPort;
  if (job.framework == Framework::PyTorch) {
    set_var(env, "MASTER_ADDR", context.master_address);
    set_var(env, "MASTER_PORT", std::to_string(port));
    set_var(env, "WORLD_SIZE", std::to_string(nodes));
    set_var(env, "NODE_RANK", std::to_string(node_rank));
    set_var(env, "RANK", std::to_string(node_rank));
    set_var(env, "LOCAL_RANK", "0");
  }
  if (job.framework == Framework::TensorFlow) {
    nlohmann::json tf_config = {
        {"cluster", {{"worker", {context.master_address + ":" + std::to_string(kMasterPort)}}}},
        {"task", {{"type", "worker"}, {"index", 0}}},
        {"environment", "cloud"}};
    set_var(env, "TF_CONFIG", tf_config.dump());
  }
}

spec::EnvVars contract_env(const Job& job, const Plan& plan, const PlanContext& context) {
  spec::EnvVars env;
  set_var(env, "AZUREML_RUN_ID", plan.run_id);
  set_var(env, "AZUREML_ARM_PROJECT_NAME", plan.experiment_name);
  set_var(env, "AZUREML_NODE_COUNT", std::to_string(job.node_count));
  set_var(env, "AZUREML_FRAMEWORK", spec::to_string(job.framework));
  set_var(env, "AZUREML_COMMUNICATOR", spec::to_string(job.distributed.communicator));
  set_var(env, "AZUREML_PROCESS_NAME", "main");
  set_var(env, "AZUREML_LOGDIRECTORY_PATH", (plan.working_dir / "logs").string());
  set_var(env, "AZ_BATCHAI_JOB_WORK_DIR", plan.working_dir.string());
  bool master = !context.share || context.share->is_master();
  set_var(env, "AZ_BATCH_IS_CURRENT_NODE_MASTER", master ? "true" : "false");
  set_var(env, "AZ_BATCH_MASTER_NODE",
          context.master_address + ":" +
              std::to_string(context.share ? context.share->master_port : kMasterPort));
  if (context.share) {
    std::string hosts, nodes;
    for (const auto& address : context.share->addresses) {
      hosts += (hosts.empty() ? "" : ",") + address;
      nodes += (nodes.empty() ? "" : ";") + address;
    }
    set_var(env, "AZ_BATCH_HOST_LIST", hosts);
    set_var(env, "AZ_BATCH_NODE_LIST", nodes);
    set_var(env, "AZ_BATCHAI_JOB_MASTER_NODE_IP", context.master_address);
  }
  // Where the amlnode_run module appends the script's metrics; under system_logs/ so the agent
  // ships it with the run's logs (metrics/python_module.h).
  set_var(env, "AMLNODE_METRICS_FILE", (plan.system_logs / "metrics.jsonl").string());
  add_distributed_vars(env, job, context);
  for (const auto& input : plan.inputs) {
    set_var(env, "AZUREML_DATAREFERENCE_" + input.name, input.target.string());
  }
  // A .runconfig's data: entry may name a variable of its own for the path, as Azure ML sets it.
  for (std::size_t i = 0; i < job.inputs.size() && i < plan.inputs.size(); ++i) {
    if (!job.inputs[i].environment_variable_name.empty())
      set_var(env, job.inputs[i].environment_variable_name, plan.inputs[i].target.string());
  }
  return env;
}

bool is_python_environment(EnvironmentKind kind) {
  return kind == EnvironmentKind::Conda || kind == EnvironmentKind::Pip;
}

// For conda / pip environments: the canonical spec, its hash, and the interpreter inside it.
void resolve_python_environment(const Job& job, const PlanContext& context, Plan& plan) {
  auto spec = environments::environment_spec(job, {context.system_python});
  if (!spec.ok()) {
    plan.cannot_run = spec.error();
    return;
  }
  plan.environment_hash = spec->hash;
  auto python = (context.envs_dir / spec->hash / "bin" / "python").string();
  if (job.entry_script && !plan.argv.empty() &&
      plan.argv.front() == job.environment.python.interpreter_path) {
    plan.argv.front() = python;
  }
  plan.python_environment = std::move(spec.value());
}

std::vector<std::string> sorted(std::vector<std::string> items) {
  std::sort(items.begin(), items.end());
  return items;
}

}  // namespace

nlohmann::json environment_identity(const Job& job) {
  const auto& python = job.environment.python;
  const auto& docker = job.environment.docker;
  nlohmann::json identity = {{"platform", "linux-x86_64"}};
  if (python.user_managed_dependencies) {
    identity["python"] = {{"user_managed", true}, {"interpreter", python.interpreter_path}};
  } else {
    identity["python"] = {{"channels", python.channels},
                          {"conda", sorted(python.conda_packages)},
                          {"pip", sorted(python.pip_packages)},
                          {"pip_options", python.pip_options}};
  }
  if (docker.enabled) {
    identity["docker"] = {{"base_image", docker.base_image},
                          {"base_dockerfile", docker.base_dockerfile.value_or("")},
                          {"use_gpu", job.use_gpu}};
  }
  return identity;
}

std::string environment_hash(const Job& job, const PlanContext& context) {
  if (is_python_environment(kind_of(job))) {
    auto spec = environments::environment_spec(job, {context.system_python});
    if (spec.ok()) return spec->hash;
  }
  return sha256_hex(environment_identity(job).dump()).substr(0, 32);
}

void set_env_var(spec::EnvVars& env, const std::string& name, const std::string& value) {
  set_var(env, name, value);
}

std::string container_key_of(const std::string& run_id, int node_rank) {
  if (node_rank < 0) return run_id;
  char suffix[24];
  std::snprintf(suffix, sizeof suffix, ".node_%02d", node_rank);
  return run_id + suffix;
}

Plan resolve_plan(const Job& job, const PlanContext& context) {
  Plan plan;
  plan.run_id = context.run_id;
  plan.container_key =
      container_key_of(context.run_id, context.share ? context.share->node_rank : -1);
  plan.experiment_name = job.experiment_name;
  plan.run_dir = context.run_dir;
  plan.working_dir = context.run_dir / "wd";
  plan.std_log = context.run_dir / "user_logs" / "std_log.txt";
  plan.system_logs = context.run_dir / "system_logs";
  if (job.batch_task) {
    place_batch_task(job, context, plan);
    plan.inputs = staged_inputs(job, plan.batch->task_dir / "inputs");
  } else {
    plan.inputs = staged_inputs(job, context.run_dir / "inputs");
    plan.argv = entry_argv(job);
  }
  plan.models = staged_models(job, context);
  if (job.resume_from) {
    plan.argv.push_back("--resume-from");
    plan.argv.push_back(plan.inputs.back().target.string());
  }
  plan.env = contract_env(job, plan, context);
  if (plan.batch) add_batch_task_vars(job, context, plan);
  plan.run_context_file = context.run_dir / "run_context.json";
  plan.run_context = run_context_of(job, plan);
  set_var(plan.env, "AMLNODE_RUN_CONTEXT", plan.run_context_file.string());
  if (!plan.models.empty())
    set_var(plan.env, "AZUREML_MODEL_DIR", (context.run_dir / "models").string());
  for (const auto& [name, value] : job.environment.environment_variables)
    set_var(plan.env, name, value);
  for (const auto& [name, value] : job.environment_variables) set_var(plan.env, name, value);
  // The arguments after the program (a shell command's line included) get the staged paths.
  for (std::size_t i = job.shell_command ? 2 : 1; i < plan.argv.size(); ++i) {
    auto substituted = substitute_placeholders(plan.argv[i], plan);
    if (!substituted.ok()) {
      plan.cannot_run = substituted.error();
      break;
    }
    plan.argv[i] = *substituted;
  }
  plan.environment_kind = kind_of(job);
  plan.environment_hash = sha256_hex(environment_identity(job).dump()).substr(0, 32);
  if (is_python_environment(plan.environment_kind)) resolve_python_environment(job, context, plan);
  plan.image = base_image_of(job, context);
  plan.shm_size = job.environment.docker.shm_size;
  plan.shm_size_bytes = job.environment.docker.shm_size_bytes;
  plan.deadline_seconds = job.max_run_duration_seconds;
  plan.kill_grace_seconds = context.kill_grace_seconds;
  plan.python_module_dir = context.python_module_dir;
  if (!plan.cannot_run) plan.cannot_run = batch_task_refusal(job, context);
  if (!plan.cannot_run) plan.cannot_run = not_yet_supported(job, context);
  if (plan.batch) {
    // One process, the executable itself.
  } else if (!plan.cannot_run && job.parallel_run) {
    plan_parallel_run(job, context, plan);
  } else if (!plan.cannot_run && job.framework == Framework::PySpark) {
    plan_pyspark(job, context, plan);
  } else if (!plan.cannot_run) {
    plan_ranks(job, context, plan);
  }
  return plan;
}

nlohmann::json plan_to_json(const Plan& plan) {
  nlohmann::json env = nlohmann::json::object();
  for (const auto& [name, value] : plan.env) env[name] = value;
  nlohmann::json inputs = nlohmann::json::array();
  for (const auto& input : plan.inputs) {
    inputs.push_back({{"name", input.name},
                      {"source", input.source.string()},
                      {"target", input.target.string()},
                      {"mode", spec::to_string(input.mode)}});
  }
  nlohmann::json out = {
      {"run_id", plan.run_id},
      {"experiment_name", plan.experiment_name},
      {"run_dir", plan.run_dir.string()},
      {"working_dir", plan.working_dir.string()},
      {"std_log", plan.std_log.string()},
      {"argv", plan.argv},
      {"env", env},
      {"environment",
       {{"kind", to_string(plan.environment_kind)}, {"hash", plan.environment_hash}}},
      {"image", plan.image ? nlohmann::json(*plan.image) : nlohmann::json(nullptr)},
      {"shm_size", plan.shm_size},
      {"shm_size_bytes", plan.shm_size_bytes},
      {"max_run_duration_seconds",
       plan.deadline_seconds ? nlohmann::json(*plan.deadline_seconds) : nlohmann::json(nullptr)},
      {"kill_grace_seconds", plan.kill_grace_seconds},
      {"inputs", inputs},
      {"python_module_dir", plan.python_module_dir
                                ? nlohmann::json(plan.python_module_dir->string())
                                : nlohmann::json(nullptr)},
      {"runnable", !plan.cannot_run.has_value()},
      {"launcher", to_string(plan.launcher)},
      {"notes", plan.notes},
  };
  if (!plan.ranks.empty()) {
    nlohmann::json ranks = nlohmann::json::array();
    for (const auto& rank : plan.ranks) {
      nlohmann::json rank_env = nlohmann::json::object();
      for (const auto& [name, value] : rank.env) rank_env[name] = value;
      ranks.push_back({{"rank", rank.rank},
                       {"local_rank", rank.local_rank},
                       {"role", rank.role},
                       {"argv", rank.argv},
                       {"env", rank_env},
                       {"std_log", rank.std_log.string()}});
    }
    out["ranks"] = ranks;
  }
  if (plan.launcher_log) out["launcher_log"] = plan.launcher_log->string();
  if (plan.cannot_run) {
    out["cannot_run"] = {{"code", plan.cannot_run->code}, {"message", plan.cannot_run->message}};
  }
  return out;
}

std::string plan_to_text(const Plan& plan) {
  std::ostringstream out;
  out << "run id:       " << plan.run_id << "\n"
      << "experiment:   " << plan.experiment_name << "\n"
      << "working dir:  " << plan.working_dir.string() << "\n"
      << "argv:        ";
  for (const auto& arg : plan.argv) out << " " << nlohmann::json(arg).dump();
  out << "\nenvironment:  " << to_string(plan.environment_kind) << " (hash "
      << plan.environment_hash << ")\n"
      << "image:        " << plan.image.value_or("(none: runs on the host)") << "\n"
      << "shm size:     " << plan.shm_size << " (" << plan.shm_size_bytes << " bytes)\n"
      << "deadline:     "
      << (plan.deadline_seconds ? std::to_string(*plan.deadline_seconds) + " s after start"
                                : std::string("none"))
      << ", kill grace " << plan.kill_grace_seconds << " s\n";
  for (const auto& input : plan.inputs) {
    out << "input:        " << input.name << " (" << spec::to_string(input.mode) << ") "
        << input.source.string() << " -> " << input.target.string() << "\n";
  }
  if (!plan.ranks.empty()) {
    out << "processes:    " << plan.ranks.size() << " ranks, started by "
        << (plan.launcher == RankLauncher::Mpirun ? "mpirun" : "the shim") << "\n";
    for (const auto& rank : plan.ranks) {
      out << "  rank " << rank.rank << (rank.role.empty() ? "" : " (" + rank.role + ")") << " -> "
          << rank.std_log.filename().string();
      for (const auto& [name, value] : rank.env) out << " " << name << "=" << value;
      out << "\n";
    }
  }
  for (const auto& note : plan.notes) out << "note:         " << note << "\n";
  out << "variables (over the inherited environment):\n";
  for (const auto& [name, value] : plan.env) out << "  " << name << "=" << value << "\n";
  if (plan.cannot_run) {
    out << "NOT RUNNABLE HERE: " << plan.cannot_run->code << ": " << plan.cannot_run->message
        << "\n";
  }
  return out.str();
}

}  // namespace amlnode::executors
