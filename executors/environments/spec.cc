#include "executors/environments/spec.h"

#include <sys/utsname.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>

#include "common/fs.h"
#include "common/hash.h"

namespace amlnode::executors::environments {
namespace {

namespace fs = std::filesystem;

// Dependencies and requirement files are small text files; anything larger is a mistake, and
// reading it whole would be an unbounded allocation.
constexpr std::size_t kMaxSpecFileBytes = 1 << 20;
// pip allows requirement files to include each other; a cycle must end somewhere.
constexpr int kMaxIncludeDepth = 16;
// Bump when the canonical form changes, so old cache entries are not mistaken for new ones.
constexpr int kIdentitySchema = 1;

bool is_space(char c) {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return text;
}

void sort_unique(std::vector<std::string>& items) {
  std::sort(items.begin(), items.end());
  items.erase(std::unique(items.begin(), items.end()), items.end());
}

void append_unique(std::vector<std::string>& items, const std::string& item) {
  if (std::find(items.begin(), items.end(), item) == items.end()) items.push_back(item);
}

// The value of a pip option given in any of the spellings pip accepts ("-r FILE", "-rFILE",
// "--requirement FILE", "--requirement=FILE"), or nullopt when `entry` is another option.
std::optional<std::string> option_value(std::string_view entry, std::string_view short_flag,
                                        std::string_view long_flag) {
  std::string_view rest;
  if (entry.starts_with(long_flag)) {
    rest = entry.substr(long_flag.size());
    if (rest.empty() || (rest.front() != '=' && !is_space(rest.front()))) return std::nullopt;
    rest.remove_prefix(1);
  } else if (entry.starts_with(short_flag)) {
    rest = entry.substr(short_flag.size());
    if (!rest.empty() && (rest.front() == '=' || is_space(rest.front()))) rest.remove_prefix(1);
  } else {
    return std::nullopt;
  }
  rest = trim(rest);
  if (rest.empty()) return std::nullopt;
  return std::string(rest);
}

// Collects pip entries from every source. What the builder passes to pip keeps requirement files
// as files (pip reads them itself); the identity has their contents flattened in instead, so that
// editing a requirement file changes the hash.
struct PipCollector {
  PipSpec build;
  std::vector<std::string> identity_options;
  std::vector<std::string> identity_packages;
};

Result<void> add_requirements_file(const fs::path& file, int depth, PipCollector& out);

// Adds one entry of a pip list or one logical line of a requirement file. `top` is true for
// entries the builder passes to pip itself, false for lines of a file pip reads.
Result<void> add_pip_entry(std::string_view raw, const fs::path& base_dir, int depth, bool top,
                           PipCollector& out) {
  std::string entry = normalise_entry(raw);
  if (entry.empty()) return ok();
  if (auto file = option_value(entry, "-r", "--requirement")) {
    fs::path path = (base_dir / *file).lexically_normal();
    if (top) out.build.requirement_files.push_back(path);
    return add_requirements_file(path, depth + 1, out);
  }
  if (auto file = option_value(entry, "-c", "--constraint")) {
    fs::path path = (base_dir / *file).lexically_normal();
    PipCollector constraints;
    if (auto read = add_requirements_file(path, depth + 1, constraints); !read) return read;
    sort_unique(constraints.identity_packages);
    nlohmann::json content = {{"options", constraints.identity_options},
                              {"packages", constraints.identity_packages}};
    append_unique(out.identity_options, "--constraint sha256:" + sha256_hex(content.dump()));
    if (top) append_unique(out.build.options, "--constraint " + path.string());
    return ok();
  }
  if (entry.front() == '-') {
    append_unique(out.identity_options, entry);
    if (top) append_unique(out.build.options, entry);
    return ok();
  }
  out.identity_packages.push_back(entry);
  if (top) out.build.packages.push_back(entry);
  return ok();
}

// A requirement file's logical lines, as pip reads them: a trailing backslash joins the next line,
// and a '#' at the start of a line or after whitespace starts a comment.
std::vector<std::string> requirement_lines(std::string_view text) {
  std::vector<std::string> lines;
  std::string current;
  while (!text.empty()) {
    auto end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty() && line.back() == '\\') {
      current.append(line.substr(0, line.size() - 1));
      continue;
    }
    current.append(line);
    for (std::size_t i = 0; i < current.size(); ++i) {
      if (current[i] == '#' && (i == 0 || is_space(current[i - 1]))) {
        current.resize(i);
        break;
      }
    }
    lines.push_back(std::move(current));
    current.clear();
  }
  if (!current.empty()) lines.push_back(std::move(current));
  return lines;
}

Result<void> add_requirements_file(const fs::path& file, int depth, PipCollector& out) {
  if (depth > kMaxIncludeDepth) {
    return Error{"InvalidPipRequirements", "pip requirement files include each other more than " +
                                               std::to_string(kMaxIncludeDepth) +
                                               " levels deep (at " + file.string() +
                                               "); is there a cycle?"};
  }
  auto text = read_file(file, kMaxSpecFileBytes);
  if (!text) {
    return Error{"InvalidPipRequirements",
                 "cannot read the pip requirement file: " + text.error().message};
  }
  for (const auto& line : requirement_lines(*text)) {
    if (auto added = add_pip_entry(line, file.parent_path(), depth, false, out); !added) {
      return added;
    }
  }
  return ok();
}

nlohmann::json yaml_to_json(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return node.Scalar();
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& item : node) out.push_back(yaml_to_json(item));
      return out;
    }
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& kv : node) out[kv.first.Scalar()] = yaml_to_json(kv.second);
      return out;
    }
    default:
      return nullptr;
  }
}

Error conda_file_error(const fs::path& file, const YAML::Node& node, const std::string& what) {
  std::string where = file.string();
  if (node.Mark().line >= 0) where += ":" + std::to_string(node.Mark().line + 1);
  return Error{"InvalidCondaDependencies", where + ": " + what};
}

Result<void> read_conda_channels(const fs::path& file, const YAML::Node& node, CondaSpec& conda) {
  if (node.IsNull()) return ok();
  if (!node.IsSequence()) return conda_file_error(file, node, "channels must be a list");
  for (const auto& item : node) {
    if (!item.IsScalar()) return conda_file_error(file, item, "a channel must be a name or URL");
    append_unique(conda.channels, normalise_entry(item.Scalar()));
  }
  return ok();
}

Result<void> read_conda_dependencies(const fs::path& file, const YAML::Node& node, CondaSpec& conda,
                                     PipCollector& pip) {
  if (node.IsNull()) return ok();
  if (!node.IsSequence()) return conda_file_error(file, node, "dependencies must be a list");
  for (const auto& item : node) {
    if (item.IsScalar()) {
      if (auto entry = normalise_entry(item.Scalar()); !entry.empty()) {
        conda.packages.push_back(entry);
      }
      continue;
    }
    if (!item.IsMap() || item.size() != 1 || !item["pip"] || !item["pip"].IsSequence()) {
      return conda_file_error(file, item, "a dependency must be a package or {pip: [...]}");
    }
    for (const auto& entry : item["pip"]) {
      if (!entry.IsScalar()) return conda_file_error(file, entry, "a pip entry must be text");
      if (auto added = add_pip_entry(entry.Scalar(), file.parent_path(), 0, true, pip); !added) {
        return added;
      }
    }
  }
  return ok();
}

// Reads a conda environment file into the canonical model. Parsing (rather than hashing the text)
// is what makes key order, comments and whitespace irrelevant.
Result<void> read_conda_file(const fs::path& file, CondaSpec& conda, PipCollector& pip) {
  auto text = read_file(file, kMaxSpecFileBytes);
  if (!text) {
    return Error{"InvalidCondaDependencies",
                 "cannot read the conda dependencies file: " + text.error().message};
  }
  YAML::Node root;
  try {
    root = YAML::Load(*text);
  } catch (const YAML::Exception& e) {
    return Error{"InvalidCondaDependencies", file.string() + ":" + std::to_string(e.mark.line + 1) +
                                                 ": not valid YAML: " + e.msg};
  }
  if (root.IsNull()) return ok();
  if (!root.IsMap())
    return conda_file_error(file, root, "expected a mapping (name, channels, ...)");
  for (const auto& kv : root) {
    const std::string key = kv.first.Scalar();
    Result<void> read = ok();
    if (key == "name" || key == "prefix") {
      continue;  // the cache decides where the environment lives
    } else if (key == "channels") {
      read = read_conda_channels(file, kv.second, conda);
    } else if (key == "dependencies") {
      read = read_conda_dependencies(file, kv.second, conda, pip);
    } else {
      conda.extra[key] = yaml_to_json(kv.second);
    }
    if (!read) return read;
  }
  return ok();
}

Result<CondaSpec> conda_spec(const spec::PythonSection& python, PipCollector& pip) {
  CondaSpec conda;
  if (python.conda_dependencies_file) {
    conda.from_file = true;
    if (auto read = read_conda_file(*python.conda_dependencies_file, conda, pip); !read) {
      return read.error();
    }
  }
  for (const auto& channel : python.channels)
    append_unique(conda.channels, normalise_entry(channel));
  for (const auto& package : python.conda_packages) {
    if (auto entry = normalise_entry(package); !entry.empty()) conda.packages.push_back(entry);
  }
  sort_unique(conda.packages);
  return conda;
}

Result<void> collect_job_pip(const spec::Job& job, PipCollector& pip) {
  const auto& python = job.environment.python;
  for (const auto& option : python.pip_options) {
    if (auto added = add_pip_entry(option, job.source_directory, 0, true, pip); !added) {
      return added;
    }
  }
  for (const auto& package : python.pip_packages) {
    if (auto added = add_pip_entry(package, job.source_directory, 0, true, pip); !added) {
      return added;
    }
  }
  if (python.pip_requirements_file) {
    pip.build.requirement_files.push_back(*python.pip_requirements_file);
    return add_requirements_file(*python.pip_requirements_file, 1, pip);
  }
  return ok();
}

fs::path resolved_interpreter(const fs::path& python) {
  std::error_code ec;
  fs::path resolved = fs::canonical(python, ec);
  return ec ? python : resolved;
}

nlohmann::json identity_of(const EnvironmentSpec& env, const PipCollector& pip) {
  nlohmann::json identity = {
      {"schema", kIdentitySchema},
      {"platform", platform_tag()},
      {"kind", to_string(env.kind)},
      {"pip", {{"options", pip.identity_options}, {"packages", pip.identity_packages}}}};
  if (env.conda) {
    identity["conda"] = {{"channels", env.conda->channels},
                         {"packages", env.conda->packages},
                         {"extra", env.conda->extra}};
  } else {
    identity["base_python"] = env.base_python.string();
  }
  return identity;
}

}  // namespace

std::string normalise_entry(std::string_view entry) {
  entry = trim(entry);
  std::string out;
  out.reserve(entry.size());
  for (char c : entry) {
    if (is_space(c)) {
      if (out.back() != ' ') out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string platform_tag() {
  static const std::string tag = [] {
    struct utsname name {};
    if (::uname(&name) != 0) return std::string("linux-unknown");
    std::string system = name.sysname;
    std::transform(system.begin(), system.end(), system.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return system + "-" + name.machine;
  }();
  return tag;
}

Result<EnvironmentSpec> environment_spec(const spec::Job& job, const SpecOptions& options) {
  const auto& python = job.environment.python;
  if (python.user_managed_dependencies) {
    return Error{"EnvironmentNotManaged",
                 "the environment is user-managed: its interpreter is used as it is, nothing is "
                 "built"};
  }
  EnvironmentSpec env;
  PipCollector pip;
  if (!python.conda_packages.empty() || python.conda_dependencies_file) {
    env.kind = EnvironmentKind::Conda;
    auto conda = conda_spec(python, pip);
    if (!conda) return conda.error();
    env.conda = std::move(conda.value());
  } else {
    env.kind = EnvironmentKind::Pip;
    env.base_python = resolved_interpreter(options.system_python);
  }
  if (auto collected = collect_job_pip(job, pip); !collected) return collected.error();
  sort_unique(pip.identity_packages);
  sort_unique(pip.build.packages);
  env.pip = std::move(pip.build);
  env.identity = identity_of(env, pip);
  env.hash = sha256_hex(env.identity.dump()).substr(0, 32);
  return env;
}

}  // namespace amlnode::executors::environments
