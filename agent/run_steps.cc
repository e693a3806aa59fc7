#include "agent/run_steps.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>

#include "agent/batch_task_folder.h"
#include "common/error_codes.h"
#include "common/format.h"
#include "common/fs.h"
#include "common/json.h"
#include "executors/inputs.h"
#include "executors/ranks.h"
#include "executors/run_cgroup.h"
#include "executors/run_folder.h"
#include "metrics/python_module.h"
#include "spec/load.h"

extern char** environ;

namespace amlnode::agent {

namespace fs = std::filesystem;
using executors::ExitReason;
using executors::Plan;
using spec::RunStatus;

namespace {

std::string describe_signal(int signal) {
  const char* text = ::strsignal(signal);
  return std::to_string(signal) + " (" + (text ? text : "unknown") + ")";
}

std::string program_name(const Plan& plan) {
  return plan.argv.empty() ? std::string("(none)")
                           : fs::path(plan.argv.front()).filename().string();
}

// Puts the amlnode_run module's folder last on PYTHONPATH (after the job's own, or the inherited
// one), so `import amlnode_run` works and a module of the same name the job brings wins.
void add_python_module_dir(std::vector<std::string>& env, const Plan& plan) {
  if (!plan.python_module_dir) return;
  const std::string dir = plan.python_module_dir->string();
  for (auto& entry : env) {
    if (entry.rfind("PYTHONPATH=", 0) != 0) continue;
    entry += (entry.size() > std::strlen("PYTHONPATH=") ? ":" : "") + dir;
    return;
  }
  env.push_back("PYTHONPATH=" + dir);
}

// The whole environment of the process: what the caller inherited, with the plan's variables
// over it.
std::vector<std::string> process_environment(const Plan& plan) {
  std::vector<std::string> env;
  for (char** entry = environ; *entry; ++entry) {
    std::string_view kv(*entry);
    auto name = kv.substr(0, kv.find('='));
    bool overridden = false;
    for (const auto& [plan_name, value] : plan.env) overridden = overridden || plan_name == name;
    if (!overridden) env.emplace_back(kv);
  }
  for (const auto& [name, value] : plan.env) env.push_back(name + "=" + value);
  add_python_module_dir(env, plan);
  return env;
}

// Sets the prepared environment's variables (PATH, VIRTUAL_ENV / CONDA_PREFIX) under the job's
// own: a variable the job sets itself keeps the job's value.
void add_environment_variables(Plan& plan, const spec::EnvVars& variables) {
  for (const auto& [name, value] : variables) {
    bool set_by_job = false;
    for (const auto& existing : plan.env) set_by_job = set_by_job || existing.first == name;
    if (!set_by_job) plan.env.emplace_back(name, value);
  }
}

}  // namespace

void SystemLog::line(const std::string& text) const {
  auto written = folder_.append(executors::RunFolder::kLifecycle,
                                format_utc(clock_->now()) + " " + text + "\n");
  if (!written.ok() && written.error().code == kLinkRefused)
    std::fprintf(stderr, "amlnode: %s (the line was: %s)\n", written.error().message.c_str(),
                 text.c_str());
}

Result<executors::environments::EnvironmentConfig> environment_config(const NodeConfig& config,
                                                                      const fs::path& state_dir) {
  return executors::environments::environment_config_from_json(config.environments, state_dir);
}

int nvidia_gpu_count() {
  int count = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/dev", ec)) {
    auto name = entry.path().filename().string();
    if (name.size() > 6 && name.starts_with("nvidia") &&
        name.find_first_not_of("0123456789", 6) == std::string::npos)
      ++count;
  }
  return count;
}

fs::path batch_root_dir(const NodeConfig& config, const fs::path& state_dir) {
  return config.batch_root_dir.value_or(state_dir / "batch");
}

executors::PlanContext plan_context(
    const NodeConfig& config, const fs::path& state_dir, const std::string& run_id,
    double kill_grace_seconds, const executors::environments::EnvironmentConfig& environments) {
  executors::PlanContext context;
  context.run_id = run_id;
  context.run_dir = executors::RunFolder::of(state_dir, run_id).root;
  context.kill_grace_seconds = kill_grace_seconds;
  context.envs_dir = environments.envs_dir;
  context.system_python = environments.system_python;
  context.python_module_dir = metrics::python_module_dir();
  context.cpus = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  context.gpus = nvidia_gpu_count();
  std::error_code program_error;
  context.agent_program = fs::read_symlink("/proc/self/exe", program_error);
  if (auto driver = context.agent_program.parent_path() / "amlnode-parallel-node";
      !program_error && fs::exists(driver, program_error))
    context.parallel_driver = driver;
  if (auto labels = config.node.find("labels"); labels != config.node.end() && labels->is_object())
    if (auto kind = labels->find("compute_kind"); kind != labels->end() && kind->is_string())
      context.compute_kind = kind->get<std::string>();
  if (context.compute_kind == "hdinsight") {
    // The agent's own PATH, not the run's (docs/hdinsight.md).
    const char* path = std::getenv("PATH");
    context.spark_submit = find_on_path("spark-submit", path ? path : "").value_or(fs::path());
    context.yarn = find_on_path("yarn", path ? path : "").value_or(fs::path());
  }
  context.batch_root_dir = batch_root_dir(config, state_dir);
  context.agent_is_root = ::geteuid() == 0;
  context.port_free = executors::port_is_free;
  context.free_port = executors::pick_free_port;
  if (config.cpu_image) context.default_cpu_image = *config.cpu_image;
  if (config.gpu_image) context.default_gpu_image = *config.gpu_image;
  return context;
}

namespace {

std::string known_names(const nlohmann::json& registry) {
  std::string names;
  for (const auto& [name, value] : registry.items()) names += (names.empty() ? "" : ", ") + name;
  return names.empty() ? "none" : names;
}

Result<void> resolve_environment(spec::Job& job, const NodeConfig& config) {
  std::string name = job.environment_name.value_or("default");
  auto found = config.named_environments.find(name);
  if (found == config.named_environments.end()) {
    if (!job.environment_name) return ok();  // no default on this node: the SDK's default stays
    return Error{"UnknownEnvironment",
                 job.environment_name_path + ": this node has no environment named \"" +
                     printable(name) + "\" (its config's named_environments has: " +
                     known_names(config.named_environments) + ")"};
  }
  auto base = config.file.empty() ? fs::current_path() : config.file.parent_path();
  auto definition =
      spec::load_environment_definition(found->dump(), base, "named_environments." + name);
  if (!definition.environment) {
    std::string why;
    for (const auto& error : definition.errors)
      why += (why.empty() ? "" : "; ") + error.to_string();
    return Error{"UnknownEnvironment",
                 "the node's environment \"" + name + "\" is invalid: " + why};
  }
  job.environment = std::move(*definition.environment);
  job.use_gpu = job.use_gpu || definition.gpu_support;
  spec::apply_docker_runtime(job);
  return ok();
}

// A registered dataset the job names by id or name: its entry in the node's datasets registry,
// a path (relative to the config file's folder) or {path, kind, format, separator, header}.
Result<void> resolve_dataset(spec::Input& input, const NodeConfig& config) {
  const nlohmann::json* entry = nullptr;
  for (const std::string& key : {input.dataset_id, input.dataset_name}) {
    if (key.empty() || entry) continue;
    if (auto found = config.datasets.find(key); found != config.datasets.end()) entry = &*found;
  }
  std::string named =
      input.dataset_id.empty()
          ? "name \"" + input.dataset_name + "\""
          : "id " + input.dataset_id +
                (input.dataset_name.empty() ? std::string()
                                            : " or name \"" + input.dataset_name + "\"");
  if (!entry) {
    return Error{"UnknownDataset",
                 input.field_path + ": this node has no dataset with " + named +
                     " (its config's datasets has: " + known_names(config.datasets) + ")"};
  }
  auto bad = [&](const std::string& why) {
    return Error{"UnknownDataset", "the node's dataset " + printable(named) + ": " + why};
  };
  std::string path = entry->is_string()   ? entry->get<std::string>()
                     : entry->is_object() ? entry->value("path", "")
                                          : "";
  if (path.empty()) return bad("expected a path, or {path, kind, format, ...}");
  auto base = config.file.empty() ? fs::current_path() : config.file.parent_path();
  fs::path resolved = fs::path(path).is_absolute() ? fs::path(path) : base / path;
  std::error_code ec;
  if (!fs::exists(resolved, ec)) return bad(resolved.string() + " does not exist");
  input.path = resolved.lexically_normal().string();
  if (!entry->is_object()) return ok();
  std::string kind = entry->value("kind", "file");
  if (kind != "file" && kind != "tabular") return bad("kind: expected file or tabular");
  input.kind = kind == "tabular" ? spec::DatasetKind::Tabular : spec::DatasetKind::File;
  std::string format = entry->value("format", "delimited");
  if (format == "delimited") {
    input.format = spec::TabularFormat::Delimited;
  } else if (format == "json_lines") {
    input.format = spec::TabularFormat::JsonLines;
  } else if (format == "parquet") {
    input.format = spec::TabularFormat::Parquet;
  } else {
    return bad("format: expected delimited, json_lines or parquet");
  }
  if (entry->contains("separator") && (*entry)["separator"].is_string())
    input.separator = (*entry)["separator"].get<std::string>();
  if (entry->contains("header") && (*entry)["header"].is_boolean())
    input.header = (*entry)["header"].get<bool>();
  return ok();
}

// The SDK's runtime packages a job's environment may list (azureml-core, azureml-defaults,
// azureml-sdk, azureml-dataset-runtime, ...): left out unless the node installs them, since the
// stand-in is what runs offer (docs/sdk-compat.md).
bool is_azureml_package(const std::string& spec) {
  std::string name = spec.substr(0, spec.find_first_of("=<>!~[; "));
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name.rfind("azureml-", 0) == 0 || name.rfind("azureml_", 0) == 0 || name == "azureml";
}

std::vector<std::string> leave_out_azureml_packages(spec::PythonSection& python) {
  std::vector<std::string> notes;
  for (auto* list : {&python.pip_packages, &python.conda_packages}) {
    std::string left_out;
    std::erase_if(*list, [&](const std::string& package) {
      if (!is_azureml_package(package)) return false;
      left_out += (left_out.empty() ? "" : ", ") + package;
      return true;
    });
    if (!left_out.empty()) {
      notes.push_back("left out of the environment: " + left_out +
                      " (the node's SDK stand-in provides azureml.core in every run; "
                      "sdk.install_azureml_packages: true in the node config installs them)");
    }
  }
  return notes;
}

}  // namespace

Result<std::vector<std::string>> resolve_node_references(spec::Job& job, const NodeConfig& config) {
  if (job.environment_name || job.node_default_environment) {
    if (auto resolved = resolve_environment(job, config); !resolved) return resolved.error();
    job.environment_name.reset();
    job.node_default_environment = false;
  }
  for (auto& input : job.inputs) {
    if (!input.dataset || !input.path.empty()) continue;
    if (auto resolved = resolve_dataset(input, config); !resolved) return resolved.error();
  }
  std::vector<std::string> notes;
  if (!config.sdk.value("install_azureml_packages", false))
    notes = leave_out_azureml_packages(job.environment.python);
  // sdk.stand_in: false lets every run import the azureml packages its environment has installed.
  bool stand_in = !config.sdk.contains("stand_in") || !config.sdk["stand_in"].is_boolean() ||
                  config.sdk["stand_in"].get<bool>();
  bool job_decides =
      std::any_of(job.environment_variables.begin(), job.environment_variables.end(),
                  [](const auto& var) { return var.first == "AMLNODE_SDK_STANDIN"; });
  if (!stand_in && !job_decides) job.environment_variables.emplace_back("AMLNODE_SDK_STANDIN", "0");
  return notes;
}

Result<void> make_run_folder(const fs::path& state_dir, const std::string& run_id) {
  fs::path run_dir = executors::RunFolder::of(state_dir, run_id).root;
  std::error_code ec;
  fs::create_directories(run_dir.parent_path(), ec);
  if (ec) {
    return Error{"StateDirUnusable",
                 "cannot create " + run_dir.parent_path().string() + ": " + ec.message()};
  }
  if (!fs::create_directory(run_dir, ec)) {
    if (ec)
      return Error{"StateDirUnusable", "cannot create " + run_dir.string() + ": " + ec.message()};
    return Error{"RunIdTaken", "run id " + run_id + " already exists in " + state_dir.string()};
  }
  for (const char* sub : {"user_logs", "system_logs"}) {
    fs::create_directory(run_dir / sub, ec);
    if (ec)
      return Error{"StateDirUnusable",
                   "cannot create " + (run_dir / sub).string() + ": " + ec.message()};
  }
  return ok();
}

// Where the places a run's inputs made outside its folder are recorded (executors/inputs.h).
static fs::path made_outside(const fs::path& run_dir) {
  return run_dir / "outside_inputs.txt";
}

Result<void> make_outputs_and_stage_inputs(const Plan& plan, const SystemLog& log) {
  if (plan.batch) {
    if (auto made = make_batch_task_folder(plan, log); !made.ok()) return made.error();
  }
  std::error_code ec;
  for (const char* sub : {"outputs", "logs"}) fs::create_directories(plan.working_dir / sub, ec);
  if (ec) return Error{"SnapshotFailed", "cannot create wd/outputs or wd/logs: " + ec.message()};
  auto staged = executors::stage_inputs(plan.inputs, made_outside(plan.run_dir));
  if (!staged.ok()) return staged;
  if (auto models = executors::stage_inputs(plan.models, made_outside(plan.run_dir)); !models.ok())
    return models;
  for (const auto& input : plan.inputs) {
    log.line("input " + input.name + ": " + spec::to_string(input.mode) + " " +
             input.source.string() + " -> " + input.target.string());
  }
  for (const auto& model : plan.models)
    log.line(model.name + ": " + model.source.string() + " -> " + model.target.string());
  return write_file_atomically(plan.run_context_file, plan.run_context.dump(2) + "\n", false);
}

void release_outside_inputs(const Plan& plan) {
  executors::unstage_inputs(made_outside(plan.run_dir));
}

void apply_script_status(RunOutcome& outcome, const fs::path& run_dir, const SystemLog& log) {
  executors::RunFolder folder{run_dir};
  auto file = folder.open("system_logs/script_status.json", O_RDONLY | O_NONBLOCK);
  if (!file.ok()) return;
  std::string text(64 << 10, '\0');
  ssize_t n = ::read(file->get(), text.data(), text.size());
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  auto status = parse_untrusted_json(text);
  if (!status.is_object() || status.value("status", "") != "Failed") return;
  // A deadline or a cancel is what ended the run, whatever the script said before it.
  if (outcome.status == spec::RunStatus::Canceled ||
      (outcome.error && outcome.error->code == errors::kRunTimeout))
    return;
  const auto& error = status.contains("error") && status["error"].is_object()
                          ? status["error"]
                          : nlohmann::json::object();
  std::string code = error.value("code", "UserError");
  std::string message = error.value("message", "The script called run.fail()");
  log.line("the script marked the run failed (run.fail()): " + code + ": " +
           printable(message, 300));
  outcome.status = spec::RunStatus::Failed;
  outcome.error = Error{printable(code, 64), printable(message, 4096)};
  if (outcome.exit_code == 0) outcome.exit_code = 1;
}

Result<executors::environments::PreparedEnvironment> prepare_python_environment(
    Plan& plan, const executors::environments::EnvironmentConfig& config,
    std::shared_ptr<Clock> clock, const SystemLog& log,
    std::function<void(std::string_view)> progress, std::function<bool()> canceled) {
  executors::environments::EnvironmentCache cache(config, std::move(clock));
  executors::environments::BuildOutput output;
  output.log_file = plan.system_logs / "environment.txt";
  output.progress = std::move(progress);
  output.canceled = std::move(canceled);
  auto prepared = cache.prepare(*plan.python_environment, output);
  if (!prepared.ok()) return prepared.error();
  log.line("environment " + prepared->hash + (prepared->built ? ": built in " : ": reused ") +
           prepared->prefix.string());
  add_environment_variables(plan, prepared->env);
  return prepared;
}

executors::LaunchSpec shim_launch_spec(const Plan& plan) {
  executors::LaunchSpec spec;
  spec.argv = plan.argv;
  spec.env = process_environment(plan);
  spec.cwd = plan.working_dir;
  spec.log_path = plan.launcher_log.value_or(plan.std_log);
  if (plan.batch) {
    spec.stderr_path = plan.batch->stderr_log;
    if (!plan.batch->user.empty()) {
      // Made when the task's folder was (batch_task_folder.h). Should it be gone, the id no user
      // has makes the start fail rather than run the task as the agent.
      auto who = find_task_user(plan.batch->user);
      spec.uid = who ? who->uid : static_cast<uid_t>(-1);
      spec.gid = who ? who->gid : static_cast<gid_t>(-1);
    }
  }
  if (plan.launcher == executors::RankLauncher::Processes) {
    for (const auto& rank : plan.ranks) {
      executors::RankLaunch launch{rank.rank, rank.argv, {}, rank.std_log};
      for (const auto& [name, value] : rank.env) launch.env.push_back(name + "=" + value);
      spec.ranks.push_back(std::move(launch));
    }
  }
  spec.state_path = plan.run_dir / "shim.json";
  spec.exit_path = plan.run_dir / "exit.json";
  if (plan.deadline_seconds) spec.deadline_seconds = static_cast<double>(*plan.deadline_seconds);
  spec.kill_grace_seconds = plan.kill_grace_seconds;
  spec.cgroup = executors::run_cgroup_path(plan.run_dir);
  return spec;
}

void end_run_processes(const fs::path& run_dir, const SystemLog& log) {
  auto cgroup = executors::run_cgroup_path(run_dir);
  if (!cgroup) return;
  auto ended = executors::end_run_cgroup(*cgroup);
  if (!ended.ok()) {
    log.line("cannot end the run's cgroup: " + ended.error().message);
  } else if (*ended > 0) {
    log.line("killed " + std::to_string(*ended) +
             " process(es) of the run left after its supervisor ended (its cgroup)");
  }
}

// The last line of a small log file, fit to quote ("" when there is none).
static std::string last_line_of(const fs::path& file) {
  auto text = read_file(file, 1 << 20);
  if (!text.ok()) return "";
  std::string_view view = *text;
  while (!view.empty() && view.back() == '\n') view.remove_suffix(1);
  auto start = view.rfind('\n');
  return printable(view.substr(start == std::string_view::npos ? 0 : start + 1), 300);
}

Result<executors::ExitRecord> read_exit_record(const fs::path& run_dir, const std::string& detail) {
  std::error_code ec;
  if (!fs::exists(run_dir, ec)) {
    return Error{errors::kSupervisorFailed,
                 "the run folder " + run_dir.string() +
                     " was removed while the run ran; how it ended is unknown"};
  }
  executors::RunFolder folder{run_dir};
  auto file = folder.open(executors::RunFolder::kExit, O_RDONLY | O_NONBLOCK);
  std::string text;
  if (file.ok()) {
    char buffer[4096];
    ssize_t n;
    while (text.size() < (1u << 20) && (n = ::read(file->get(), buffer, sizeof buffer)) > 0)
      text.append(buffer, static_cast<std::size_t>(n));
  }
  auto record = file.ok() ? executors::exit_record_from_json(text)
                          : Result<executors::ExitRecord>(file.error());
  if (!record.ok()) {
    // The shim's last words say why it could not write exit.json (a full disk, say).
    std::string last = last_line_of(folder.path(executors::RunFolder::kShimLog));
    return Error{errors::kSupervisorFailed,
                 "the run's supervisor ended without recording the exit (" + detail + ")" +
                     (last.empty() ? "" : "; its last message: " + last) + "; see " +
                     folder.path(executors::RunFolder::kShimLog).string()};
  }
  return record;
}

namespace {

// The rank (numbered in the run) that failed first, when the shim (ranks it started) or mpirun
// (its own message in mpi_log.txt) names one. mpirun on a gang's master may name a rank of
// another node; the shim only ranks of this one.
std::optional<int> failed_rank_of(const executors::ExitRecord& exit, const Plan& plan) {
  // exit.json and mpi_log.txt are in the run folder, where the job can write: a rank is believed
  // only in range.
  if (exit.failed_rank) {
    for (const auto& rank : plan.ranks)
      if (rank.rank == *exit.failed_rank) return rank.rank;
    return std::nullopt;
  }
  if (plan.launcher != executors::RankLauncher::Mpirun || !plan.launcher_log) return std::nullopt;
  if (exit.reason != ExitReason::Exited || exit.exit_code.value_or(0) == 0) return std::nullopt;
  // The file is read beneath the run folder and bounded.
  executors::RunFolder folder{plan.run_dir};
  auto file = folder.open(executors::RunFolder::kMpiLog, O_RDONLY | O_NONBLOCK);
  if (!file.ok()) return std::nullopt;
  std::string text(256 << 10, '\0');
  ssize_t n = ::read(file->get(), text.data(), text.size());
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  auto rank = executors::mpirun_failed_rank(text);
  if (!rank || *rank < 0 || *rank >= plan.world_size) return std::nullopt;
  return rank;
}

// The failure a ParallelRunStep's node wrote (plan.error_file): the rule that failed the run and
// the entry script's first error, which say more than an exit code.
std::optional<RunOutcome> reported_failure(const executors::ExitRecord& exit, const Plan& plan) {
  if (!plan.error_file || exit.reason != ExitReason::Exited || exit.exit_code.value_or(0) == 0)
    return std::nullopt;
  // In the run folder, where the job can write: read bounded and believed only as text.
  auto text = read_file(*plan.error_file, 64 << 10);
  if (!text.ok()) return std::nullopt;
  auto reported = parse_untrusted_json(*text);
  if (!reported.is_object() || !reported.contains("message") || !reported["message"].is_string())
    return std::nullopt;
  return RunOutcome{RunStatus::Failed, Error{"UserError", reported["message"].get<std::string>()},
                    exit.exit_code.value_or(1)};
}

std::string rank_log_name(int rank) {
  char name[64];
  std::snprintf(name, sizeof name, "std_log_process_%02d.txt", rank);
  return name;
}

// A share hosting Open MPI's daemon for the master's mpirun: its process ended badly. The ranks'
// own failures are the master's to name (its mpirun hears of them); this says where to look here.
RunOutcome mpi_daemon_outcome(const executors::ExitRecord& exit, const Plan& plan) {
  int node_rank = plan.ranks.front().rank / static_cast<int>(plan.ranks.size());
  char log[64];
  std::snprintf(log, sizeof log, "user_logs/mpi_log_node_%02d.txt", node_rank);
  std::string how = exit.signal
                        ? "was killed by signal " + describe_signal(*exit.signal)
                        : "exited with status code " + std::to_string(exit.exit_code.value_or(-1));
  return RunOutcome{RunStatus::Failed,
                    Error{"UserError", "Open MPI's daemon on node rank " +
                                           std::to_string(node_rank) + " " + how + "; see " + log},
                    exit.signal ? 128 + *exit.signal : exit.exit_code.value_or(1)};
}

std::optional<RunOutcome> failed_rank_outcome(const executors::ExitRecord& exit, const Plan& plan) {
  if (plan.ranks.empty()) return std::nullopt;
  if (exit.reason != ExitReason::Exited && exit.reason != ExitReason::Signaled &&
      exit.reason != ExitReason::SpawnFailed)
    return std::nullopt;
  auto rank = failed_rank_of(exit, plan);
  std::string program = plan.ranks.front().argv.empty()
                            ? program_name(plan)
                            : fs::path(plan.ranks.front().argv.front()).filename().string();
  std::string log = "user_logs/" + rank_log_name(rank.value_or(plan.ranks.front().rank));
  if (exit.reason == ExitReason::SpawnFailed)
    return RunOutcome{RunStatus::Failed, Error{"ProcessStartFailed", exit.error}, 125};
  if (!rank) {
    if (!exit.signal && exit.exit_code.value_or(1) == 0) return std::nullopt;
    if (plan.launcher != executors::RankLauncher::Mpirun) return std::nullopt;
    if (plan.hosts_mpi_daemon) return mpi_daemon_outcome(exit, plan);
    std::string how =
        exit.signal ? "was killed by signal " + describe_signal(*exit.signal)
                    : "exited with status code " + std::to_string(exit.exit_code.value_or(-1));
    return RunOutcome{RunStatus::Failed,
                      Error{"UserError", "mpirun " + how +
                                             " without naming a failed rank; see "
                                             "user_logs/mpi_log.txt"},
                      exit.signal ? 128 + *exit.signal : exit.exit_code.value_or(1)};
  }
  std::string how = exit.signal
                        ? "was killed by signal " + describe_signal(*exit.signal)
                        : "exited with status code " + std::to_string(exit.exit_code.value_or(-1));
  int code = exit.signal ? 128 + *exit.signal : exit.exit_code.value_or(1);
  return RunOutcome{
      RunStatus::Failed,
      Error{"UserError", "Rank " + std::to_string(*rank) + " of " +
                             std::to_string(plan.world_size) + " ('" + program + "') " + how +
                             "; the other ranks were stopped; its log is " + log},
      code};
}

}  // namespace

std::string argv_text(const Plan& plan) {
  std::string text;
  for (const auto& arg : plan.argv) text += (text.empty() ? "" : " ") + arg;
  return text;
}

RunOutcome canceled_if_stopped(RunOutcome outcome, bool cancel_requested) {
  if (!cancel_requested || !outcome.error || outcome.error->code != errors::kSupervisorFailed)
    return outcome;
  return {RunStatus::Canceled, Error{errors::kCanceled, "The run was canceled"}, 130};
}

RunOutcome outcome_of(const executors::ExitRecord& exit, const Plan& plan) {
  // Exit codes of `amlnode run` (local_run.h): 124 timeout, 125 before start, 130 canceled.
  const std::string program = program_name(plan);
  if (auto failed = failed_rank_outcome(exit, plan)) return *failed;
  if (auto reported = reported_failure(exit, plan)) return *reported;
  switch (exit.reason) {
    case ExitReason::Exited:
      if (exit.exit_code.value_or(1) == 0) return {RunStatus::Completed, std::nullopt, 0};
      // AzureBatchStep(is_positive_exit_code_failure=False): a task's exit code fails nothing.
      if (plan.batch && !plan.batch->positive_exit_code_failure && exit.exit_code)
        return {RunStatus::Completed, std::nullopt, *exit.exit_code};
      return {RunStatus::Failed,
              Error{"UserError", "User process '" + program + "' exited with status code " +
                                     std::to_string(exit.exit_code.value_or(-1))},
              exit.exit_code.value_or(1)};
    case ExitReason::Signaled:
      return {RunStatus::Failed,
              Error{"UserError", "User process '" + program + "' was killed by signal " +
                                     describe_signal(exit.signal.value_or(0)) +
                                     (exit.error.empty() ? "" : ": " + exit.error)},
              128 + exit.signal.value_or(0)};
    case ExitReason::Timeout:
      return {RunStatus::Failed,
              Error{errors::kRunTimeout, "The run exceeded max_run_duration_seconds (" +
                                             std::to_string(plan.deadline_seconds.value_or(0)) +
                                             " s) and was stopped"},
              124};
    case ExitReason::Canceled:
      return {RunStatus::Canceled, Error{errors::kCanceled, "The run was canceled"}, 130};
    case ExitReason::SpawnFailed:
      return {RunStatus::Failed, Error{"ProcessStartFailed", exit.error}, 125};
  }
  return {RunStatus::Failed, Error{errors::kSupervisorFailed, "unknown exit reason"}, 125};
}

}  // namespace amlnode::agent
