#include "spec/sections.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "spec/paths.h"
#include "spec/values.h"

namespace amlnode::spec::detail {
namespace fs = std::filesystem;
namespace {

// Keys RunConfiguration.save() writes inside the sections amlnode reads, but which do not matter
// to a run here. They are kept without a warning.
constexpr std::array<std::string_view, 4> kEnvironmentUnused = {
    "databricks", "r", "inferencingStackVersion", "assetId"};
constexpr std::array<std::string_view, 1> kPythonUnused = {"baseCondaEnvironment"};
constexpr std::array<std::string_view, 1> kDockerUnused = {"platform"};
constexpr std::array<std::string_view, 1> kRegistryUnused = {"registryIdentity"};
constexpr std::array<std::string_view, 1> kCondaUnused = {"prefix"};
constexpr std::array<std::string_view, 1> kDataReferenceUnused = {"dataStoreName"};

std::string snake_to_camel(std::string_view snake) {
  std::string camel;
  bool upper = false;
  for (char c : snake) {
    if (c == '_') {
      upper = true;
    } else {
      camel.push_back(upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c);
      upper = false;
    }
  }
  return camel;
}

bool starts_with_instruction(std::string_view text) {
  for (std::string_view instruction : {"FROM ", "ARG ", "# syntax="}) {
    if (text.size() >= instruction.size() &&
        equals_ignoring_case(text.substr(0, instruction.size()), instruction)) {
      return true;
    }
  }
  return false;
}

// A base_dockerfile is either the Dockerfile itself or the name of a file in the source
// directory. A value with a line break is always text; a single line names a file when that
// file exists, is a one-line Dockerfile when it starts with an instruction, and is an error
// otherwise (most likely a file name with a typo).
std::optional<std::string> read_dockerfile(const Field& field, const ShapeContext& context) {
  auto value = context.reader().text(field);
  if (!value) return std::nullopt;
  if (value->find('\n') != std::string::npos || !context.files_dir()) return value;
  fs::path file = clean_absolute(fs::path(*value), *context.files_dir());
  std::error_code ec;
  if (fs::is_regular_file(file, ec)) {
    auto content = read_small_file(file);
    if (content.ok()) return std::move(content).value();
    context.diagnostics().error(field.path, content.error().message);
    return std::nullopt;
  }
  if (starts_with_instruction(*value)) return value;
  context.diagnostics().error(
      field.path, "expected Dockerfile text or the name of a file in the source directory, got " +
                      quote(*value) + ", which is neither (no such file: " + quote(file.string()) +
                      ")");
  return std::nullopt;
}

void read_conda_dependencies(const Field& field, const ShapeContext& context,
                             PythonSection& python) {
  Reader& reader = context.reader();
  if (!reader.mapping(field)) return;
  MappingWalker walker;
  walker
      .on("name",
          [&](const Field& f) {
            if (auto name = reader.text(f)) python.conda_env_name = *name;
          })
      .on("channels",
          [&](const Field& f) {
            if (auto channels = reader.text_list(f)) python.channels = *channels;
          })
      .on("dependencies", [&](const Field& f) {
        if (!f.node->is_sequence()) return reader.wrong(f, "a list of packages");
        for (std::size_t i = 0; i < f.node->items.size(); ++i) {
          Field item{&f.node->items[i], item_path(f.path, i)};
          if (item.node->is_mapping() && item.node->entries.size() == 1 && item["pip"].node) {
            if (auto pip = reader.text_list(item["pip"])) add_pip_entries(python, *pip);
          } else if (auto package = reader.argument(item, "a package or {pip: [...]}")) {
            python.conda_packages.push_back(*package);
          }
        }
      });
  context.walk(walker, field, kCondaUnused);
}

void read_python(const Field& field, const ShapeContext& context, EnvironmentFields& out) {
  Reader& reader = context.reader();
  if (!reader.mapping(field)) return;
  PythonSection& python = out.environment.python;
  std::string inline_path;
  std::string file_path;
  MappingWalker walker;
  walker
      .on(context.key("user_managed_dependencies"),
          [&](const Field& f) {
            auto flag = reader.boolean(f);
            if (flag) python.user_managed_dependencies = *flag;
            if (flag.value_or(false)) out.user_managed_path = f.path;
          })
      .on(context.key("interpreter_path"),
          [&](const Field& f) {
            if (auto path = reader.text(f)) python.interpreter_path = *path;
          })
      .on(context.key("conda_dependencies"),
          [&](const Field& f) {
            inline_path = f.path;
            read_conda_dependencies(f, context, python);
          })
      .on(context.key("conda_dependencies_file"), [&](const Field& f) {
        file_path = f.path;
        auto value = reader.text(f);
        if (!value || !context.files_dir()) return;
        auto file = resolve_existing_file(*value, *context.files_dir());
        if (file.ok()) {
          python.conda_dependencies_file = file.value();
        } else {
          context.diagnostics().error(f.path, file.error().message);
        }
      });
  context.walk(walker, field, kPythonUnused);
  if (!inline_path.empty() && !file_path.empty()) {
    context.diagnostics().error(file_path, "cannot be combined with " + inline_path +
                                               "; give the conda specification one way");
  }
  out.conda_path = !inline_path.empty() ? inline_path : file_path;
}

void read_docker(const Field& field, const ShapeContext& context, EnvironmentFields& out) {
  Reader& reader = context.reader();
  if (!reader.mapping(field)) return;
  DockerSection& docker = out.environment.docker;
  std::string image_path;
  std::string dockerfile_path;
  MappingWalker walker;
  walker
      .on("enabled",
          [&](const Field& f) {
            out.docker_enabled = reader.boolean(f);
            docker.enabled = out.docker_enabled.value_or(docker.enabled);
          })
      .on(context.key("base_image"),
          [&](const Field& f) {
            image_path = f.path;
            if (auto image = reader.text(f)) docker.base_image = *image;
          })
      .on(context.key("base_dockerfile"),
          [&](const Field& f) {
            dockerfile_path = f.path;
            docker.base_dockerfile = read_dockerfile(f, context);
          })
      .on(context.key("base_image_registry"),
          [&](const Field& f) { docker.base_image_registry = read_registry(f, context); })
      .on(context.key("shm_size"),
          [&](const Field& f) {
            out.shm_size_path = f.path;
            if (auto size = read_size(f, reader)) {
              docker.shm_size = size->text;
              docker.shm_size_bytes = size->bytes;
            }
          })
      .on("arguments",
          [&](const Field& f) {
            out.arguments_path = f.path;
            if (auto arguments = reader.text_list(f)) docker.arguments = *arguments;
          })
      .on(context.key("gpu_support"),
          [&](const Field& f) {
            out.gpu_support = reader.boolean(f);
            docker.gpu_support = out.gpu_support.value_or(false);
          })
      .on(context.key("shared_volumes"),
          [&](const Field& f) {
            out.shared_volumes_path = f.path;
            if (auto shared = reader.boolean(f)) docker.shared_volumes = *shared;
          })
      .on(context.key("build_context"), [&](const Field& f) {
        context.diagnostics().error(
            f.path, "a Docker build context is not supported by amlnode; use " +
                        context.key("base_image") + " or " + context.key("base_dockerfile"));
      });
  context.walk(walker, field, kDockerUnused);
  if (!image_path.empty() && !dockerfile_path.empty()) {
    context.diagnostics().error(dockerfile_path,
                                "cannot be combined with " + image_path +
                                    "; an environment is built from a base image or from a "
                                    "Dockerfile, not both");
  }
  out.image_path = !image_path.empty() ? image_path : dockerfile_path;
}

// environment.spark: repositories, packages ({group, artifact, version} each, or
// "group:artifact:version") and precache_packages.
void read_spark_section(const Field& field, const ShapeContext& context, SparkSection& out) {
  Reader& reader = context.reader();
  if (!reader.mapping(field)) return;
  MappingWalker walker;
  walker
      .on("repositories",
          [&](const Field& f) {
            if (auto repositories = reader.text_list(f)) {
              for (const auto& repository : *repositories)
                if (repository.find(',') != std::string::npos)
                  return reader.wrong(f, "repository URLs without commas");
              out.repositories = *repositories;
            }
          })
      .on("packages",
          [&](const Field& f) {
            if (f.node->kind != Node::Kind::Sequence) return reader.wrong(f, "a list of packages");
            for (std::size_t i = 0; i < f.node->items.size(); ++i) {
              Field item{&f.node->items[i], f.path + "[" + std::to_string(i) + "]"};
              if (item.node->kind == Node::Kind::Scalar) {
                auto text = reader.text(item);
                // group:artifact:version, each part there, none with a comma (--packages joins
                // them with commas).
                bool whole = text && std::count(text->begin(), text->end(), ':') == 2 &&
                             text->find(',') == std::string::npos && text->front() != ':' &&
                             text->back() != ':' && text->find("::") == std::string::npos;
                if (whole) out.packages.push_back(*text);
                if (text && !whole) reader.wrong(item, "group:artifact:version");
                continue;
              }
              if (!reader.mapping(item)) continue;
              std::string parts[3];
              const char* names[3] = {"group", "artifact", "version"};
              MappingWalker package;
              for (int k = 0; k < 3; ++k)
                package.on(names[k],
                           [&, k](const Field& p) { parts[k] = reader.text(p).value_or(""); });
              package.walk_strict(item, context.diagnostics());
              bool whole = !parts[0].empty() && !parts[1].empty() && !parts[2].empty();
              for (const auto& part : parts)
                whole = whole && part.find_first_of(":,") == std::string::npos;
              if (!whole) {
                context.diagnostics().error(item.path,
                                            "a package needs group, artifact and version");
                continue;
              }
              out.packages.push_back(parts[0] + ":" + parts[1] + ":" + parts[2]);
            }
          })
      .on(context.key("precache_packages"), [&](const Field& f) {
        if (auto precache = reader.boolean(f)) out.precache_packages = *precache;
      });
  context.walk(walker, field, {});
}

}  // namespace

void read_hdi(const Field& field, const ShapeContext& context, Job::SparkRun& out) {
  Reader& reader = context.reader();
  if (!reader.mapping(field)) return;
  MappingWalker walker;
  walker.on(context.key("yarn_deploy_mode"), [&](const Field& f) {
    auto mode = reader.text(f);
    if (mode && (*mode == "cluster" || *mode == "client")) {
      out.yarn_deploy_mode = *mode;
    } else if (mode) {
      reader.wrong(f, "cluster or client");
    }
  });
  context.walk(walker, field, {});
}

void read_spark_run(const Field& field, const ShapeContext& context, Job::SparkRun& out) {
  Reader& reader = context.reader();
  if (!reader.mapping(field)) return;
  MappingWalker walker;
  walker.on("configuration", [&](const Field& f) {
    if (!reader.mapping(f)) return;
    for (const auto& [key, value] : f.node->entries) {
      Field entry{&value, f.path + "." + key};
      bool name = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
      });
      if (!name) {
        context.diagnostics().error(entry.path,
                                    "not a Spark property name (letters, digits, . _ -)");
        continue;
      }
      if (!entry.is_set()) {
        context.diagnostics().error(entry.path, "needs a value");
        continue;
      }
      if (auto text = reader.argument(entry, "a value")) out.configuration.emplace_back(key, *text);
    }
  });
  context.walk(walker, field, {});
}

void ShapeContext::keep(const Field& field) const {
  if (unused_ && field.node) (*unused_)[field.path] = to_json(*field.node);
}

std::string ShapeContext::key(std::string_view snake) const {
  return shape_ == SourceShape::RunConfig ? snake_to_camel(snake) : std::string(snake);
}

void ShapeContext::walk(const MappingWalker& walker, const Field& section,
                        std::span<const std::string_view> known_unused) const {
  if (shape_ == SourceShape::Native) return walker.walk_strict(section, diagnostics());
  std::vector<std::string_view> known = walker.keys();
  walker.walk(section, [&](const std::string& key, const Field& field) {
    keep(field);
    for (std::string_view unused : known_unused) {
      if (unused == key) return;
    }
    std::string hint = did_you_mean(key, known);
    diagnostics().warning(field.path, "not a field amlnode knows here; kept but unused" +
                                          (hint.empty() ? "" : "; " + hint));
  });
}

EnvironmentFields read_environment(const Field& field, const ShapeContext& context) {
  EnvironmentFields out;
  Reader& reader = context.reader();
  if (!reader.mapping(field)) return out;
  MappingWalker walker;
  walker
      .on("name",
          [&](const Field& f) {
            if (auto name = reader.text(f)) out.environment.name = *name;
          })
      .on("version",
          [&](const Field& f) {
            if (auto version = reader.text(f)) out.environment.version = *version;
          })
      .on(context.key("environment_variables"),
          [&](const Field& f) {
            if (auto variables = read_variables(f, reader)) {
              out.environment.environment_variables = *variables;
            }
          })
      .on("python", [&](const Field& f) { read_python(f, context, out); })
      .on("docker", [&](const Field& f) { read_docker(f, context, out); })
      .on("spark", [&](const Field& f) { read_spark_section(f, context, out.environment.spark); });
  context.walk(walker, field, kEnvironmentUnused);
  return out;
}

std::optional<RegistryDetails> read_registry(const Field& field, const ShapeContext& context) {
  Reader& reader = context.reader();
  if (!reader.mapping(field)) return std::nullopt;
  RegistryDetails registry;
  MappingWalker walker;
  walker
      .on("address",
          [&](const Field& f) {
            if (auto address = reader.text(f)) registry.address = *address;
          })
      .on("username",
          [&](const Field& f) {
            if (auto username = reader.text(f)) registry.username = *username;
          })
      .on("password", [&](const Field& f) {
        if (auto password = reader.text(f, /*secret=*/true)) registry.password = *password;
      });
  context.walk(walker, field, kRegistryUnused);
  if (registry.address.empty() && registry.username.empty() && registry.password.empty()) {
    return std::nullopt;
  }
  if (registry.address.empty()) {
    context.diagnostics().error(join_path(field.path, "address"),
                                "expected the registry's address with its credentials, got "
                                "nothing");
  }
  if (registry.username.empty() != registry.password.empty()) {
    std::string missing = registry.username.empty() ? "username" : "password";
    context.diagnostics().error(
        join_path(field.path, missing),
        "expected a username and a password together, got only the " +
            std::string(registry.username.empty() ? "password" : "username"));
  }
  return registry;
}

std::optional<EnvVars> read_variables(const Field& field, Reader& reader) {
  if (!reader.mapping(field)) return std::nullopt;
  EnvVars variables;
  for (const auto& [name, value] : field.node->entries) {
    Field variable{&value, join_path(field.path, name)};
    if (!is_variable_name(name)) {
      reader.diagnostics().error(variable.path,
                                 "expected a variable name of letters, digits and _ that does not "
                                 "start with a digit, got " +
                                     quote(name));
      continue;
    }
    if (value.is_null()) continue;
    if (auto text = reader.argument(variable, "a string, number or boolean")) {
      variables.emplace_back(name, *text);
    }
  }
  return variables;
}

std::optional<Size> read_size(const Field& field, Reader& reader) {
  auto text = reader.text(field);
  if (!text) return std::nullopt;
  if (auto bytes = parse_size(*text)) return Size{*text, *bytes};
  reader.wrong(field, kSizeExpected);
  return std::nullopt;
}

void add_pip_entries(PythonSection& python, const std::vector<std::string>& entries) {
  for (const std::string& entry : entries) {
    if (!entry.empty() && entry.front() == '-') {
      python.pip_options.push_back(entry);
    } else {
      python.pip_packages.push_back(entry);
    }
  }
}

// Where an input goes on the node: "" (the inputs folder's <name>) for "./" and the like, a
// relative path kept inside the inputs folder, or an absolute one below /tmp, which the SDK writes
// (/tmp/<uuid>) and the agent makes and removes; nullopt for anything else.
std::optional<std::string> path_on_compute(std::string_view text) {
  fs::path given = fs::path(text).lexically_normal();
  if (given.is_absolute()) {
    auto below = given.lexically_relative("/tmp");
    if (below.empty() || *below.begin() == ".." || below == ".") return std::nullopt;
    std::string absolute = given.string();
    while (absolute.size() > 1 && absolute.back() == '/') absolute.pop_back();
    return absolute;
  }
  std::string normal = given.string();
  if (normal == "." || normal == "./") return "";
  if (!is_contained_relative(text)) return std::nullopt;
  while (!normal.empty() && normal.back() == '/') normal.pop_back();
  return normal == "." ? "" : normal;
}

namespace {

// A native input declared as a dataset (DatasetConsumptionConfig): `dataset: file|tabular`, and
// for tables `format` (delimited, json_lines, parquet), `separator` and `header`.
void read_dataset_fields(MappingWalker& walker, Input& input, const ShapeContext& context) {
  Reader& reader = context.reader();
  walker
      .on("dataset",
          [&](const Field& f) {
            auto text = reader.text(f);
            if (!text) return;
            input.dataset = true;
            if (*text == "file") {
              input.kind = DatasetKind::File;
            } else if (*text == "tabular") {
              input.kind = DatasetKind::Tabular;
            } else {
              reader.wrong(f, "file or tabular");
            }
          })
      .on("format",
          [&](const Field& f) {
            auto text = reader.text(f);
            if (!text) return;
            if (*text == "delimited") {
              input.format = TabularFormat::Delimited;
            } else if (*text == "json_lines") {
              input.format = TabularFormat::JsonLines;
            } else if (*text == "parquet") {
              input.format = TabularFormat::Parquet;
            } else {
              reader.wrong(f, "delimited, json_lines or parquet");
            }
          })
      .on("separator",
          [&](const Field& f) {
            if (auto text = reader.text(f)) input.separator = *text;
          })
      .on("header", [&](const Field& f) {
        if (auto header = reader.boolean(f)) input.header = *header;
      });
}

}  // namespace

std::optional<Input> read_input(const std::string& name, const Field& field,
                                const ShapeContext& context, const fs::path& anchor) {
  Reader& reader = context.reader();
  Diagnostics& diagnostics = context.diagnostics();
  std::size_t errors_before = diagnostics.error_count();
  if (!is_input_name(name)) {
    diagnostics.error(field.path,
                      "expected a name of letters, digits and _ (it becomes part of "
                      "AZUREML_DATAREFERENCE_<name>), got " +
                          quote(name));
  }
  Input input;
  input.name = name;
  std::optional<std::string> path;
  std::string path_key = context.shape() == SourceShape::Native ? "path" : "pathOnDataStore";
  if (field.node->is_scalar() && context.shape() == SourceShape::Native) {
    path = reader.text(field);
  } else if (reader.mapping(field)) {
    MappingWalker walker;
    walker.on(path_key, [&](const Field& f) { path = reader.text(f); })
        .on("mode",
            [&](const Field& f) {
              auto text = reader.text(f);
              if (!text) return;
              if (auto mode = parse_input_mode(*text)) {
                input.mode = *mode;
              } else {
                reader.wrong(f, input_mode_names());
              }
            })
        .on(context.key("path_on_compute"),
            [&](const Field& f) {
              auto text = reader.text(f);
              if (!text) return;
              if (auto where = path_on_compute(*text)) {
                input.path_on_compute = *where;
              } else {
                reader.wrong(f,
                             "a relative path inside the run's inputs folder, or an absolute "
                             "path below /tmp (as the SDK makes them)");
              }
            })
        .on("overwrite", [&](const Field& f) {
          if (auto overwrite = reader.boolean(f)) input.overwrite = *overwrite;
        });
    if (context.shape() == SourceShape::Native) read_dataset_fields(walker, input, context);
    context.walk(walker, field, kDataReferenceUnused);
    if (!field[path_key].is_set()) reader.wrong(field[path_key], "the input's local path");
  }
  if (path && input.mode == InputMode::Upload) {
    // Where the run writes its results: made when the run is staged if it is not there yet.
    input.path = clean_absolute(fs::path(*path), anchor).string();
  } else if (path) {
    auto resolved = resolve_existing_path(*path, anchor);
    if (resolved.ok()) {
      input.path = resolved.value().string();
    } else {
      diagnostics.error(field.node->is_mapping() ? join_path(field.path, path_key) : field.path,
                        resolved.error().message);
    }
  }
  if (diagnostics.error_count() != errors_before) return std::nullopt;
  return input;
}

}  // namespace amlnode::spec::detail
