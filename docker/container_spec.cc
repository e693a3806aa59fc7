#include "docker/container_spec.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string_view>

#include "common/format.h"
#include "executors/plan.h"
#include "executors/run_folder.h"
#include "executors/shim/protocol.h"

namespace amlnode::docker {
namespace {

constexpr const char* kUnsupportedArgument = "UnsupportedDockerArgument";
constexpr const char* kGpuNotAvailable = "GpuNotAvailable";

using Apply = std::function<Result<void>(ContainerSpec&, const std::string& value)>;

// One `docker run` option this runtime understands.
struct Option {
  std::vector<std::string_view> names;  // "--long" and, when it has one, "-s"
  bool takes_value;
  Apply apply;
};

Error bad_value(std::string_view option, const std::string& value, std::string_view expected) {
  return Error{kUnsupportedArgument, "docker argument " + std::string(option) + " '" + value +
                                         "': expected " + std::string(expected)};
}

void append(nlohmann::json& host_config, const char* field, nlohmann::json value) {
  if (!host_config.contains(field)) host_config[field] = nlohmann::json::array();
  host_config[field].push_back(std::move(value));
}

void set_env(spec::EnvVars& env, const std::string& name, const std::string& value) {
  auto it = std::find_if(env.begin(), env.end(), [&](const auto& kv) { return kv.first == name; });
  if (it != env.end()) {
    it->second = value;
  } else {
    env.emplace_back(name, value);
  }
}

std::optional<std::int64_t> parse_int(std::string_view text) {
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::vector<std::string> split(std::string_view text, char separator) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    auto end = text.find(separator, start);
    parts.emplace_back(text.substr(start, end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

Result<void> apply_ulimit(ContainerSpec& spec, const std::string& value) {
  auto equals = value.find('=');
  if (equals == std::string::npos || equals == 0) {
    return bad_value("--ulimit", value, "name=soft[:hard]");
  }
  auto limits = split(std::string_view(value).substr(equals + 1), ':');
  auto soft = parse_int(limits[0]);
  auto hard = limits.size() == 2 ? parse_int(limits[1]) : soft;
  if (limits.size() > 2 || !soft || !hard) return bad_value("--ulimit", value, "name=soft[:hard]");
  append(spec.host_config, "Ulimits",
         {{"Name", value.substr(0, equals)}, {"Soft", *soft}, {"Hard", *hard}});
  return ok();
}

Result<void> apply_env(ContainerSpec& spec, const std::string& value) {
  auto equals = value.find('=');
  if (equals == 0) return bad_value("--env", value, "NAME=value or NAME");
  if (equals != std::string::npos) {
    set_env(spec.env, value.substr(0, equals), value.substr(equals + 1));
    return ok();
  }
  // `-e NAME` takes amlnode's own value, as `docker run -e NAME` takes the CLI's; the job asked
  // for that variable by name, which is the only way the host's environment gets in.
  if (const char* host_value = std::getenv(value.c_str())) set_env(spec.env, value, host_value);
  return ok();
}

Result<void> apply_volume(ContainerSpec& spec, const std::string& value) {
  auto parts = split(value, ':');
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty()) {
    return bad_value("--volume", value, "SOURCE:TARGET[:OPTIONS]");
  }
  append(spec.host_config, "Binds", value);
  return ok();
}

Result<void> apply_device(ContainerSpec& spec, const std::string& value) {
  auto parts = split(value, ':');
  if (parts.size() > 3 || parts[0].empty()) {
    return bad_value("--device", value, "HOST[:CONTAINER[:PERMISSIONS]]");
  }
  append(spec.host_config, "Devices",
         {{"PathOnHost", parts[0]},
          {"PathInContainer", parts.size() > 1 ? parts[1] : parts[0]},
          {"CgroupPermissions", parts.size() > 2 ? parts[2] : "rwm"}});
  return ok();
}

Result<void> apply_memory(ContainerSpec& spec, const std::string& value) {
  auto bytes = parse_byte_size(value);
  if (!bytes || *bytes == 0) return bad_value("--memory", value, "a size such as 4g");
  spec.host_config["Memory"] = *bytes;
  return ok();
}

Result<void> apply_shm_size(ContainerSpec& spec, const std::string& value) {
  auto bytes = parse_byte_size(value);
  if (!bytes || *bytes == 0) return bad_value("--shm-size", value, "a size such as 2g");
  spec.host_config["ShmSize"] = *bytes;
  return ok();
}

Result<void> apply_cpus(ContainerSpec& spec, const std::string& value) {
  char* end = nullptr;
  double cpus = std::strtod(value.c_str(), &end);
  if (value.empty() || *end != '\0' || !(cpus > 0) || !std::isfinite(cpus)) {
    return bad_value("--cpus", value, "a positive number of CPUs");
  }
  spec.host_config["NanoCpus"] = static_cast<std::int64_t>(std::llround(cpus * 1e9));
  return ok();
}

// --gpus all | N | device=ID[,ID...] | count=N|all (optionally in double quotes, as the CLI
// accepts them).
Result<void> apply_gpus(ContainerSpec& spec, const std::string& raw) {
  std::string value = raw;
  value.erase(std::remove(value.begin(), value.end(), '"'), value.end());
  nlohmann::json request = {{"Driver", kGpuDriver}, {"Capabilities", {{"gpu"}}}};
  if (value == "all" || value == "count=all") {
    request["Count"] = -1;
  } else if (auto count = parse_int(value.starts_with("count=") ? value.substr(6) : value)) {
    if (*count <= 0) return bad_value("--gpus", raw, "all, a positive count or device=IDS");
    request["Count"] = *count;
  } else if (value.starts_with("device=") && value.size() > 7) {
    request["Count"] = 0;
    request["DeviceIDs"] = split(std::string_view(value).substr(7), ',');
  } else {
    return bad_value("--gpus", raw, "all, a positive count or device=IDS");
  }
  spec.host_config["DeviceRequests"] = nlohmann::json::array({request});
  return ok();
}

Apply set_field(const char* field) {
  return [field](ContainerSpec& spec, const std::string& value) -> Result<void> {
    spec.host_config[field] = value;
    return ok();
  };
}

Apply append_field(const char* field) {
  return [field](ContainerSpec& spec, const std::string& value) -> Result<void> {
    append(spec.host_config, field, value);
    return ok();
  };
}

Apply set_flag(const char* field, std::string_view option) {
  return [field, option](ContainerSpec& spec, const std::string& value) -> Result<void> {
    if (value != "true" && value != "false") return bad_value(option, value, "true or false");
    spec.host_config[field] = value == "true";
    return ok();
  };
}

const std::vector<Option>& supported_options() {
  static const std::vector<Option> options = {
      {{"--shm-size"}, true, apply_shm_size},
      {{"--ipc"}, true, set_field("IpcMode")},
      {{"--network", "--net"}, true, set_field("NetworkMode")},
      {{"--cap-add"}, true, append_field("CapAdd")},
      {{"--cap-drop"}, true, append_field("CapDrop")},
      {{"--privileged"}, false, set_flag("Privileged", "--privileged")},
      {{"--ulimit"}, true, apply_ulimit},
      {{"--env", "-e"}, true, apply_env},
      {{"--volume", "-v"}, true, apply_volume},
      {{"--device"}, true, apply_device},
      {{"--memory", "-m"}, true, apply_memory},
      {{"--cpus"}, true, apply_cpus},
      {{"--gpus"}, true, apply_gpus},
      {{"--user", "-u"},
       true,
       [](ContainerSpec& spec, const std::string& value) -> Result<void> {
         spec.user = value;
         return ok();
       }},
      {{"--security-opt"}, true, append_field("SecurityOpt")},
      {{"--init"}, false, set_flag("Init", "--init")},
  };
  return options;
}

std::string supported_list() {
  std::string list;
  for (const auto& option : supported_options()) {
    for (auto name : option.names) list += (list.empty() ? "" : ", ") + std::string(name);
  }
  return list;
}

// The option `argument` names and the value written inside it ("--x=v", "-ev"), if any.
const Option* find_option(std::string_view argument, std::optional<std::string>& inline_value) {
  for (const auto& option : supported_options()) {
    for (auto name : option.names) {
      if (argument == name) return &option;
      bool long_form = name.starts_with("--");
      if (long_form && argument.starts_with(name) && argument.size() > name.size() &&
          argument[name.size()] == '=') {
        inline_value = std::string(argument.substr(name.size() + 1));
        return &option;
      }
      if (!long_form && option.takes_value && argument.starts_with(name) &&
          argument.size() > name.size()) {
        inline_value = std::string(argument.substr(name.size()));
        return &option;
      }
    }
  }
  return nullptr;
}

std::string container_name(const std::string& run_id) {
  std::string name = "amlnode-" + run_id;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') c = '-';
  }
  return name;
}

// Each input's own path, so that mount-mode inputs (symlinks into the run folder pointing at host
// paths) and upload targets resolve inside the container. Download inputs are copies inside the
// run folder already.
void bind_inputs(const executors::Plan& plan, nlohmann::json& binds) {
  auto inside_run = [&](const std::filesystem::path& path) {
    auto relative = path.lexically_normal().lexically_relative(plan.run_dir.lexically_normal());
    return !relative.empty() && *relative.begin() != "..";
  };
  for (const auto& input : plan.inputs) {
    if (input.mode == spec::InputMode::Download || input.source.empty()) continue;
    if (inside_run(input.source)) continue;
    std::string source = input.source.lexically_normal().string();
    binds.push_back(source + ":" + source + (input.mode == spec::InputMode::Mount ? ":ro" : ""));
  }
}

Result<void> request_gpus(const spec::Job& job, ContainerSpec& spec,
                          const ContainerOptions& options) {
  bool wants = job_wants_gpu(job, spec.image, options.default_gpu_image) ||
               spec.host_config.contains("DeviceRequests");
  if (!wants) return ok();
  if (options.node.gpu_count <= 0) {
    return Error{kGpuNotAvailable,
                 "the job needs GPUs (use_gpu, an NCCL set-up, a GPU base image or --gpus) but "
                 "this node has none; it was not started rather than run on CPU"};
  }
  if (!spec.host_config.contains("DeviceRequests")) {
    spec.host_config["DeviceRequests"] = nlohmann::json::array(
        {{{"Driver", kGpuDriver}, {"Count", -1}, {"Capabilities", {{"gpu"}}}}});
  }
  return ok();
}

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

}  // namespace

bool job_wants_gpu(const spec::Job& job, const std::string& image,
                   const std::string& default_gpu_image) {
  if (job.use_gpu) return true;
  if (job.distributed.communicator == spec::Communicator::Nccl ||
      lower(job.distributed.communication_backend) == "nccl") {
    return true;
  }
  if (!image.empty() && image == default_gpu_image) return true;
  std::string name = lower(image);
  return name.find("cuda") != std::string::npos || name.find("gpu") != std::string::npos;
}

std::optional<std::uint64_t> parse_byte_size(std::string_view text) {
  std::string value = lower(std::string(text));
  std::size_t digits = 0;
  while (digits < value.size() &&
         (std::isdigit(static_cast<unsigned char>(value[digits])) || value[digits] == '.')) {
    ++digits;
  }
  if (digits == 0) return std::nullopt;
  char* end = nullptr;
  std::string number = value.substr(0, digits);
  double amount = std::strtod(number.c_str(), &end);
  if (*end != '\0' || !std::isfinite(amount)) return std::nullopt;
  std::string unit = value.substr(digits);
  if (unit.size() == 2 && unit[0] != 'b' && unit[1] == 'b') unit.pop_back();
  static const std::map<std::string, double> kUnits = {{"", 1},
                                                       {"b", 1},
                                                       {"k", 1024.0},
                                                       {"m", 1024.0 * 1024},
                                                       {"g", 1024.0 * 1024 * 1024},
                                                       {"t", 1024.0 * 1024 * 1024 * 1024}};
  auto multiplier = kUnits.find(unit);
  if (multiplier == kUnits.end()) return std::nullopt;
  double bytes = amount * multiplier->second;
  if (bytes >= 1.8e19) return std::nullopt;  // beyond 64 bits
  return static_cast<std::uint64_t>(bytes);
}

Result<void> apply_docker_arguments(const std::vector<std::string>& arguments,
                                    ContainerSpec& spec) {
  for (std::size_t i = 0; i < arguments.size(); ++i) {
    const std::string& argument = arguments[i];
    std::optional<std::string> value;
    const Option* option = find_option(argument, value);
    if (!option) {
      return Error{kUnsupportedArgument, "docker argument '" + argument +
                                             "' is not supported by amlnode's container runtime "
                                             "(supported: " +
                                             supported_list() + ")"};
    }
    if (!option->takes_value) {
      if (auto applied = option->apply(spec, value.value_or("true")); !applied) return applied;
      continue;
    }
    if (!value) {
      if (i + 1 >= arguments.size()) {
        return Error{kUnsupportedArgument, "docker argument '" + argument + "' needs a value"};
      }
      value = arguments[++i];
    }
    if (auto applied = option->apply(spec, *value); !applied) return applied;
  }
  return ok();
}

namespace {

// The ranks of the run start under amlnode-shim inside the container, as they do on the host: its
// launch spec names each rank's command, variables (over the container's) and log, and the
// container's command becomes the shim. Its files are the ranks_*.json of the run folder
// (executors/run_folder.h), apart from the agent's own.
Result<void> run_ranks_under_shim(const executors::Plan& plan, const ContainerOptions& options,
                                  ContainerSpec& spec) {
  if (options.shim_binary.empty())
    return Error{"NotSupported", "several ranks in a container need amlnode-shim on this node"};
  using executors::RunFolder;
  RunFolder folder{plan.run_dir};
  executors::LaunchSpec launch;
  launch.argv = plan.ranks.front().argv;
  launch.cwd = plan.working_dir;
  launch.log_path = plan.std_log;
  launch.state_path = folder.path(RunFolder::kRanksShimState);
  launch.exit_path = folder.path(RunFolder::kRanksExit);
  launch.kill_grace_seconds = plan.kill_grace_seconds;
  launch.inherit_env = true;
  for (const auto& rank : plan.ranks) {
    executors::RankLaunch entry{rank.rank, rank.argv, {}, rank.std_log};
    for (const auto& [name, value] : rank.env) entry.env.push_back(name + "=" + value);
    launch.ranks.push_back(std::move(entry));
  }
  spec.launch_spec = executors::launch_spec_to_json(launch);
  spec.launch_file = folder.path(RunFolder::kRanksLaunch);
  std::string shim = options.shim_binary.lexically_normal().string();
  spec.host_config["Binds"].push_back(shim + ":" + shim + ":ro");
  spec.argv = {shim, spec.launch_file.string()};
  spec.std_log = folder.path(RunFolder::kShimLog);
  return ok();
}

}  // namespace

Result<ContainerSpec> container_spec_for(const executors::Plan& plan, const spec::Job& job,
                                         const std::string& image,
                                         const ContainerOptions& options) {
  if (plan.argv.empty()) {
    return Error{"InvalidPlan", "the run has no command to start in its container"};
  }
  ContainerSpec spec;
  const std::string& key = plan.container_key.empty() ? plan.run_id : plan.container_key;
  spec.name = key.empty() ? "" : container_name(key);
  spec.image = image;
  spec.argv = plan.argv;
  spec.std_log = plan.std_log;
  spec.env = plan.env;
  spec.working_dir = plan.working_dir;
  spec.user = options.user;
  spec.labels = {{kRunIdLabel, key}, {"amlnode.managed", "true"}};
  auto& host = spec.host_config;
  std::string run_dir = plan.run_dir.lexically_normal().string();
  host["Binds"] = nlohmann::json::array({run_dir + ":" + run_dir});
  bind_inputs(plan, host["Binds"]);
  if (plan.python_module_dir) {
    spec.python_module_dir = plan.python_module_dir->lexically_normal();
    std::string dir = spec.python_module_dir->string();
    host["Binds"].push_back(dir + ":" + dir + ":ro");
  }
  for (const auto& program : plan.host_files) {
    std::string path = program.lexically_normal().string();
    host["Binds"].push_back(path + ":" + path + ":ro");
  }
  host["ShmSize"] = plan.shm_size_bytes > 0 ? plan.shm_size_bytes : (2ull << 30);
  host["Init"] = options.init;
  if (job.node_count > 1 || job.distributed.process_count_per_node > 1) {
    host["NetworkMode"] = "host";
  }
  if (auto applied = apply_docker_arguments(job.environment.docker.arguments, spec); !applied) {
    return applied.error();
  }
  if (auto gpus = request_gpus(job, spec, options); !gpus) return gpus.error();
  if (plan.launcher == executors::RankLauncher::Processes) {
    if (auto ranks = run_ranks_under_shim(plan, options, spec); !ranks) return ranks.error();
  }
  return spec;
}

std::vector<std::string> logging_entrypoint(
    const std::filesystem::path& std_log,
    const std::optional<std::filesystem::path>& python_module_dir) {
  std::string script;
  if (python_module_dir) {
    script = "PYTHONPATH=\"${PYTHONPATH:+$PYTHONPATH:}\"" +
             shell_quote(python_module_dir->string()) + "; export PYTHONPATH; ";
  }
  script += "exec \"$0\" \"$@\" >>" + shell_quote(std_log.string()) + " 2>&1";
  return {"/bin/sh", "-c", script};
}

nlohmann::json create_request_body(const ContainerSpec& spec) {
  nlohmann::json env = nlohmann::json::array();
  for (const auto& [name, value] : spec.env) env.push_back(name + "=" + value);
  nlohmann::json body = {
      {"Image", spec.image},
      {"Entrypoint", logging_entrypoint(spec.std_log, spec.python_module_dir)},
      {"Cmd", spec.argv},
      {"Env", env},
      {"WorkingDir", spec.working_dir.string()},
      {"Labels", spec.labels},
      {"AttachStdin", false},
      {"AttachStdout", false},
      {"AttachStderr", false},
      {"OpenStdin", false},
      {"Tty", false},
      {"HostConfig", spec.host_config},
  };
  if (spec.user) body["User"] = *spec.user;
  return body;
}

}  // namespace amlnode::docker
