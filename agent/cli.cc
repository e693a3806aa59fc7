#include "agent/cli.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "agent/attach_command.h"
#include "agent/daemon/agent_main.h"
#include "agent/daemon/log_setup.h"
#include "agent/daemon/mpi_launch.h"
#include "agent/daemon/parallel_client.h"
#include "agent/dev_cluster.h"
#include "agent/env_commands.h"
#include "agent/local_run.h"
#include "agent/spark_submit.h"
#include "agent/user_commands.h"
#include "executors/shim/launcher.h"
#include "parallel/node_driver.h"
#include "spec/load.h"

namespace amlnode::agent {

namespace {

constexpr int kExitUsage = 2;

// Options every command that touches the state dir shares.
struct CommonOptions {
  std::optional<std::string> config_file;
  std::optional<std::string> state_dir;

  void add_to(CLI::App& command) {
    command.add_option(
        "--config", config_file,
        "node config file (default: $AMLNODE_CONFIG, else /etc/amlnode/config.yml if present)");
    command.add_option(
        "--state-dir", state_dir,
        "where runs and environments are kept (default: the config's state_dir, "
        "$AMLNODE_STATE_DIR, /var/lib/amlnode for root, else ~/.local/state/amlnode)");
  }

  // The config and the state dir these options resolve to, or an error message.
  Result<std::pair<NodeConfig, std::filesystem::path>> resolve() const {
    NodeConfig config;
    if (auto path = config_path(config_file)) {
      auto loaded = load_node_config(*path);
      if (!loaded.ok()) return loaded.error();
      config = std::move(loaded.value());
    }
    std::filesystem::path dir = state_dir          ? std::filesystem::path(*state_dir)
                                : config.state_dir ? *config.state_dir
                                                   : default_state_dir();
    return std::make_pair(std::move(config), std::filesystem::absolute(dir));
  }

  // Resolves into `config` and `state_dir`; on failure says why on stderr and returns false.
  bool resolve_into(NodeConfig& config, std::filesystem::path& state_dir) const {
    auto resolved = resolve();
    if (!resolved.ok()) {
      std::fprintf(stderr, "amlnode: %s\n", resolved.error().message.c_str());
      return false;
    }
    config = std::move(resolved->first);
    state_dir = std::move(resolved->second);
    return true;
  }
};

nlohmann::json diagnostics_json(const std::vector<spec::Diagnostic>& diagnostics) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& d : diagnostics) out.push_back({{"path", d.path}, {"message", d.message}});
  return out;
}

struct ValidateCommand {
  std::string job_file;
  std::optional<std::string> source_dir;
  bool json = false;

  void add_to(CLI::App& app, CLI::App*& command) {
    command = app.add_subcommand("validate",
                                 "Check a job file; every problem is listed with its field path");
    command->add_option("JOB", job_file, "job file (native YAML/JSON, or a v1 .runconfig)")
        ->required();
    command->add_option("--source-dir", source_dir,
                        "the job's source directory, overriding the job file");
    command->add_flag("--json", json, "print the result as JSON");
  }

  int run() const {
    spec::LoadOptions options;
    if (source_dir) options.source_dir_override = *source_dir;
    auto loaded = spec::load_job_file(job_file, options);
    if (json) {
      nlohmann::json out = {{"valid", loaded.ok()},
                            {"errors", diagnostics_json(loaded.errors)},
                            {"warnings", diagnostics_json(loaded.warnings)}};
      std::printf("%s\n", out.dump(2).c_str());
      return loaded.ok() ? 0 : kExitInvalidJob;
    }
    for (const auto& w : loaded.warnings)
      std::printf("%s: warning: %s\n", job_file.c_str(), w.to_string().c_str());
    for (const auto& e : loaded.errors)
      std::printf("%s: error: %s\n", job_file.c_str(), e.to_string().c_str());
    if (loaded.ok()) {
      std::printf("%s: valid\n", job_file.c_str());
    } else {
      std::printf("%s: %zu problem%s\n", job_file.c_str(), loaded.errors.size(),
                  loaded.errors.size() == 1 ? "" : "s");
    }
    return loaded.ok() ? 0 : kExitInvalidJob;
  }
};

// `amlnode run [options] JOB [SCRIPT ARGS...]`, or `amlnode run -c JOB [options] [SCRIPT ARGS...]`
// as `az ml run submit-script -c CONFIG -e EXPERIMENT train.py --alpha 1` takes them: options come
// first, and everything from the first word that is not one of them is the job file (unless -c
// named it) and then the script with its own arguments, passed on untouched.
struct RunCommand {
  CommonOptions common;
  LocalRunOptions options;
  std::optional<std::string> job_option;
  std::optional<std::string> source_dir;
  std::optional<std::string> run_id;
  std::optional<std::string> experiment;
  CLI::App* command_ = nullptr;

  void add_to(CLI::App& app, CLI::App*& command) {
    command = app.add_subcommand(
        "run",
        "Run a job on this machine, with no control plane: amlnode run [options] JOB [SCRIPT "
        "ARGS...]");
    command_ = command;
    command->add_option("-c,--job", job_option,
                        "the job file (native YAML/JSON, or a v1 .runconfig); then the words after "
                        "the options are SCRIPT ARGS...");
    command->add_option("-e,--experiment", experiment, "the experiment (default: the job's)");
    common.add_to(*command);
    command->add_option("--run-id", run_id, "the run's id (default: <experiment>_<time>_<random>)");
    command->add_option("--source-dir", source_dir,
                        "the job's source directory, overriding the job file");
    command
        ->add_option("--kill-grace", options.kill_grace_seconds,
                     "seconds between SIGTERM and SIGKILL when stopping")
        ->check(CLI::NonNegativeNumber);
    command->add_flag("--dry-run", options.dry_run, "print the resolved plan and run nothing");
    command->add_flag("--json", options.json, "print the final run.json (or the plan) as JSON");
    command->add_flag("--quiet,-q", options.quiet, "print only the run's output");
  }

  // The words that are not run's own options (split_job_words): the job file, unless -c named
  // it, then the script and its arguments.
  std::vector<std::string> words;

  int run() {
    std::vector<std::string> rest = words;
    if (!job_option) {
      if (rest.empty()) {
        std::fprintf(stderr, "amlnode run: the job file is required (JOB, or -c JOB)\n");
        return kExitUsage;
      }
      job_option = rest.front();
      rest.erase(rest.begin());
    }
    if (!common.resolve_into(options.config, options.state_dir)) return kExitUsage;
    options.job_file = *job_option;
    if (source_dir) options.source_dir = *source_dir;
    options.run_id = run_id;
    options.experiment = experiment;
    if (!rest.empty()) {
      options.script = rest.front();
      options.script_arguments.assign(rest.begin() + 1, rest.end());
    }
    auto launcher = executors::make_shim_launcher(executors::default_shim_binary());
    return run_local(options, make_system_clock(), *launcher);
  }
};

// `amlnode agent`: the daemon.
struct AgentCommand {
  CommonOptions common;
  LogOverrides log;
  bool ephemeral = false;

  void add_to(CLI::App& app, CLI::App*& command) {
    command = app.add_subcommand(
        "agent", "Run the node agent (the daemon): register, heartbeat, run leased jobs");
    common.add_to(*command);
    command->add_option("--log-level", log.level,
                        "debug, info, warn or error (default: the config's log.level, else info)");
    command->add_option("--log-format", log.format,
                        "text or json lines (default: the config's log.format, else text)");
    command->add_flag("--ephemeral", ephemeral,
                      "take one run, then leave for good and exit 0 (the config's node.ephemeral)");
  }

  int run() {
    NodeConfig config;
    std::filesystem::path state_dir;
    if (!common.resolve_into(config, state_dir)) return kExitUsage;
    if (ephemeral) config.node["ephemeral"] = true;
    if (auto logging = configure_daemon_logging(config, log); !logging.ok()) {
      std::fprintf(stderr, "amlnode agent: %s\n", logging.error().message.c_str());
      return kExitUsage;
    }
    return run_agent(config, state_dir);
  }
};

// `amlnode dev`: a control plane and agents on this machine, for trying and developing.
struct DevCommand {
  DevClusterOptions options;
  std::optional<std::string> data_dir;
  std::optional<std::string> node_config;
  std::optional<std::string> submit;

  void add_to(CLI::App& app, CLI::App*& command) {
    command = app.add_subcommand(
        "dev", "Run a local cluster for trying and developing: a control plane and N agents");
    command->add_option("--nodes", options.nodes, "how many agents")
        ->capture_default_str()
        ->check(CLI::Range(1, 64));
    command->add_option("--data-dir", data_dir,
                        "where the cluster keeps its state (default: a fresh folder under /tmp, "
                        "kept on exit)");
    command
        ->add_option("--listen", options.listen,
                     "HOST:PORT the control plane listens on (port 0: a free one)")
        ->capture_default_str();
    command->add_option("--compute", options.compute, "the compute the agents join")
        ->capture_default_str();
    command->add_option("--config", node_config,
                        "a node config whose sections (images, environments, docker, node, log) "
                        "every agent gets");
    command->add_option("--submit", submit,
                        "submit this job once the nodes are up and follow its log; the cluster "
                        "then stops and the exit code is the run's (0 Completed, else 1)");
    command->add_option("--experiment,-e", options.experiment,
                        "the experiment of --submit's run (default: the job's)");
    command->add_flag("--stay", options.stay, "with --submit: keep the cluster after the run");
  }

  int run() {
    if (data_dir) options.data_dir = *data_dir;
    if (node_config) options.node_config = *node_config;
    options.submit_job = submit;
    return run_dev_cluster(options);
  }
};

// `amlnode env list|prune` and `amlnode image list|prune`: the same shape over two caches.
struct CacheCommand {
  using Action = int (*)(const EnvCommandOptions&);
  CommonOptions common;
  EnvCommandOptions options;
  CLI::App* list = nullptr;
  CLI::App* prune = nullptr;
  Action list_action;
  Action prune_action;

  CacheCommand(Action list_fn, Action prune_fn) : list_action(list_fn), prune_action(prune_fn) {}

  void add_to(CLI::App& app, CLI::App*& command, const std::string& name, const std::string& what,
              const std::string& budget_help) {
    command = app.add_subcommand(name, "Show and evict " + what);
    command->require_subcommand(1);
    list = command->add_subcommand("list", "List " + what + ", least recently used first");
    prune = command->add_subcommand("prune", "Evict least-recently-used " + what + " not in use");
    for (auto* sub : {list, prune}) {
      common.add_to(*sub);
      sub->add_flag("--json", options.json, "print JSON");
    }
    prune->add_option("--budget-bytes", options.budget_bytes, budget_help);
  }

  int run() {
    if (!common.resolve_into(options.config, options.state_dir)) return kExitUsage;
    return *list ? list_action(options) : prune_action(options);
  }
};

// `amlnode shim LAUNCH_JSON` and `amlnode controlplane ...` run the small `amlnode-shim` and the
// `amlnode-controlplane` executables beside this one: each process then costs the node only its
// own footprint (a shim per job process, a server that needs none of the agent's code).
// `amlnode parallel-node`: a ParallelRunStep's run process, its spec in $AMLNODE_PRS_SPEC.
int run_parallel_node_command() {
  return agent::run_parallel_node_from_env("amlnode parallel-node");
}

int exec_sibling(const std::filesystem::path& binary, const std::vector<std::string>& args) {
  std::string program = binary.string();
  std::vector<std::string> copies = args;
  std::vector<char*> argv{program.data()};
  for (auto& arg : copies) argv.push_back(arg.data());
  argv.push_back(nullptr);
  ::execv(program.c_str(), argv.data());
  std::fprintf(stderr, "amlnode: cannot start %s: %s\n", program.c_str(), std::strerror(errno));
  return kExitBeforeStart;
}

// `run` and `submit` take `[options] JOB [options] [SCRIPT ARGS...]` (or `-c JOB` and then
// SCRIPT ARGS...), as `az ml run submit-script` does: the subcommand's own options may stand before
// and after the job file, and from the script on every word is the script's, options included.
// Splits the words after the subcommand into its options (for CLI11) and the rest, in order.
std::pair<std::vector<std::string>, std::vector<std::string>> split_job_words(
    CLI::App& command, const std::vector<std::string>& words) {
  std::vector<std::string> options, rest;
  bool job_by_option = false;
  for (std::size_t i = 0; i < words.size(); ++i) {
    const std::string& word = words[i];
    std::size_t script_at = job_by_option ? 0 : 1;  // rest's index where the script starts
    if (rest.size() > script_at || (rest.size() == script_at && !word.starts_with("-"))) {
      rest.push_back(word);
      continue;
    }
    if (word == "--") {
      rest.insert(rest.end(), words.begin() + static_cast<std::ptrdiff_t>(i) + 1, words.end());
      break;
    }
    if (!word.starts_with("-") || word == "-") {
      rest.push_back(word);
      continue;
    }
    options.push_back(word);
    std::string name = word.substr(0, word.find('='));
    const CLI::Option* option = command.get_option_no_throw(name);
    if (option && option->check_name("-c")) job_by_option = true;
    bool takes_value = option && option->get_expected_min() > 0;
    if (takes_value && word.find('=') == std::string::npos && i + 1 < words.size())
      options.push_back(words[++i]);
  }
  return {options, rest};
}

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{"amlnode: the node agent for ML compute clusters (Azure ML v1 runtime contract)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "amlnode 0.1.0");

  CLI::App *run_command = nullptr, *validate_command = nullptr, *env_command = nullptr;
  RunCommand run;
  run.add_to(app, run_command);
  ValidateCommand validate;
  validate.add_to(app, validate_command);
  CacheCommand env(env_list, env_prune);
  env.add_to(app, env_command, "env", "the shared conda / pip environments",
             "evict down to this many bytes (0: every environment not in use; default: the "
             "configured budget)");
  env.prune->add_flag("--dry-run", env.options.dry_run,
                      "report what would be evicted and change nothing");
  CLI::App* image_command = nullptr;
  CacheCommand image(image_list, image_prune);
  image.add_to(
      app, image_command, "image", "the Docker images amlnode built",
      "remove images until they total at most this many bytes (default 0: all not in use)");
  CLI::App* agent_command = nullptr;
  AgentCommand agent;
  agent.add_to(app, agent_command);
  CLI::App* dev_command = nullptr;
  DevCommand dev;
  dev.add_to(app, dev_command);
  UserCommands user_commands;
  user_commands.add_to(app);
  AttachCommand attach;
  attach.add_to(app);
  auto* shim_command = app.add_subcommand("shim", "Internal: the per-process supervisor");
  std::vector<std::string> shim_args;
  shim_command->add_option("ARGS", shim_args)->required();
  auto* controlplane_command = app.add_subcommand(
      "controlplane",
      "Run the reference control plane server (--listen ADDR --data-dir DIR; see --help)");
  // Every argument, --help included, is the server's own: it lists its flags itself.
  controlplane_command->prefix_command();
  controlplane_command->set_help_flag();

  // Open MPI's rsh agent and its other end (daemon/mpi_launch.h): every argument is theirs.
  auto* rsh_command = app.add_subcommand(
      "mpi-rsh", "Internal: Open MPI's rsh agent for a run across nodes (HOST COMMAND...)");
  rsh_command->prefix_command();
  rsh_command->set_help_flag();
  app.add_subcommand("mpi-host", "Internal: starts Open MPI's daemons on a share's node");
  app.add_subcommand("parallel-node", "Internal: runs a ParallelRunStep's workers on this node");
  auto* spark_command = app.add_subcommand(
      "spark-submit", "Internal: a PySpark run's spark-submit on an HDInsight node (-- ARGS...)");
  spark_command->prefix_command();
  spark_command->set_help_flag();
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args.front() == "mpi-rsh")
    return run_mpi_rsh(std::vector<std::string>(args.begin() + 1, args.end()));
  if (args.size() == 1 && args.front() == "mpi-host") return run_mpi_host();
  if (args.size() == 1 && args.front() == "parallel-node") return run_parallel_node_command();
  if (!args.empty() && args.front() == "spark-submit")
    return run_spark_submit(std::vector<std::string>(args.begin() + 1, args.end()));

  // For run and submit, CLI11 gets their options only; the job, script and arguments are theirs.
  if (!args.empty() && (args.front() == "run" || args.front() == "submit")) {
    CLI::App* command = app.get_subcommand(args.front());
    auto [options, rest] =
        split_job_words(*command, std::vector<std::string>(args.begin() + 1, args.end()));
    args.resize(1);
    args.insert(args.end(), options.begin(), options.end());
    if (command == run_command) {
      run.words = rest;
    } else {
      user_commands.set_submit_words(rest);
    }
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments last first
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : kExitUsage;
  }
  if (*validate_command) return validate.run();
  if (*env_command) return env.run();
  if (*image_command) return image.run();
  if (*shim_command) return exec_sibling(executors::default_shim_binary(), shim_args);
  if (*controlplane_command) {
    auto binary =
        std::filesystem::read_symlink("/proc/self/exe").parent_path() / "amlnode-controlplane";
    return exec_sibling(binary, controlplane_command->remaining());
  }
  if (*agent_command) return agent.run();
  if (*dev_command) return dev.run();
  if (int code = user_commands.run(); code >= 0) return code;
  if (int code = attach.run(); code >= 0) return code;
  return run.run();
}

}  // namespace amlnode::agent
