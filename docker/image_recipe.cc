#include "docker/image_recipe.h"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/hash.h"
#include "executors/plan.h"

namespace amlnode::docker {
namespace {

constexpr const char* kImageBuildFailed = "ImageBuildFailed";
constexpr const char* kWheelDirInContext = "amlnode/wheels";
constexpr const char* kCondaFileInContext = "amlnode/conda_dependencies.yml";
constexpr const char* kRequirementsInContext = "amlnode/requirements.txt";

std::string exec_form(const std::vector<std::string>& argv) {
  return nlohmann::json(argv).dump();
}

bool is_micromamba(const std::string& tool) {
  return std::filesystem::path(tool).filename() == "micromamba";
}

bool has_conda_layer(const spec::PythonSection& python) {
  return !python.user_managed_dependencies &&
         (python.conda_dependencies_file || !python.conda_packages.empty());
}

bool has_pip_layer(const spec::PythonSection& python) {
  return !python.user_managed_dependencies &&
         (python.pip_requirements_file || !python.pip_packages.empty());
}

// A Dockerfile ENV value in double quotes: the builder would otherwise expand $VARIABLES and
// unescape backslashes in it.
std::string env_value(const std::string& value) {
  std::string quoted = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\' || c == '$') quoted += '\\';
    quoted += c;
  }
  return quoted + "\"";
}

// A variable that a Dockerfile cannot express (a newline in the value, an odd name) stays out of
// the image; the run still gets it, because the container's environment is the plan's.
bool fits_dockerfile(const std::string& name, const std::string& value) {
  if (name.empty() || value.find('\n') != std::string::npos) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

Result<std::string> read_context_file(const std::filesystem::path& path, std::size_t max_bytes) {
  auto content = read_file(path, max_bytes);
  if (!content) return Error{kImageBuildFailed, content.error().message};
  return content;
}

Result<void> add_wheels(const std::filesystem::path& dir, std::size_t max_bytes,
                        std::vector<ContextFile>& files) {
  std::error_code ec;
  std::vector<std::filesystem::path> wheels;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.is_regular_file()) wheels.push_back(entry.path());
  }
  if (ec) {
    return Error{kImageBuildFailed,
                 "cannot read the local wheel directory " + dir.string() + ": " + ec.message()};
  }
  std::sort(wheels.begin(), wheels.end());
  for (const auto& wheel : wheels) {
    auto content = read_context_file(wheel, max_bytes);
    if (!content) return content.error();
    files.push_back(
        {std::string(kWheelDirInContext) + "/" + wheel.filename().string(), std::move(*content)});
  }
  return ok();
}

std::string conda_layer(const spec::PythonSection& python, const BuilderConfig& config) {
  std::vector<std::string> argv{config.conda_tool};
  if (python.conda_dependencies_file) {
    std::string file = std::string("/") + kCondaFileInContext;
    if (is_micromamba(config.conda_tool)) {
      argv.insert(argv.end(), {"create", "-y", "-p", kCondaPrefixInImage, "-f", file});
    } else {
      argv.insert(argv.end(), {"env", "create", "-p", kCondaPrefixInImage, "-f", file});
    }
    return "COPY " + std::string(kCondaFileInContext) + " " + file + "\nRUN " + exec_form(argv) +
           "\n";
  }
  argv.insert(argv.end(), {"create", "-y", "-p", kCondaPrefixInImage});
  for (const auto& channel : python.channels) argv.insert(argv.end(), {"-c", channel});
  argv.insert(argv.end(), python.conda_packages.begin(), python.conda_packages.end());
  return "RUN " + exec_form(argv) + "\n";
}

std::string pip_layer(const spec::PythonSection& python, const BuilderConfig& config) {
  std::string python_path =
      has_conda_layer(python) ? std::string(kCondaPrefixInImage) + "/bin/python" : config.python;
  std::vector<std::string> argv{
      python_path, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check"};
  argv.insert(argv.end(), config.pip_install_options.begin(), config.pip_install_options.end());
  argv.insert(argv.end(), python.pip_options.begin(), python.pip_options.end());
  argv.insert(argv.end(), python.pip_packages.begin(), python.pip_packages.end());
  std::string layer;
  if (python.pip_requirements_file) {
    std::string file = std::string("/") + kRequirementsInContext;
    layer += "COPY " + std::string(kRequirementsInContext) + " " + file + "\n";
    argv.insert(argv.end(), {"-r", file});
  }
  return layer + "RUN " + exec_form(argv) + "\n";
}

std::string environment_layer(const spec::EnvVars& variables) {
  std::string layer;
  for (const auto& [name, value] : variables) {
    if (fits_dockerfile(name, value)) layer += "ENV " + name + "=" + env_value(value) + "\n";
  }
  return layer;
}

// The layers amlnode adds on top of any base, plus the context files they copy.
Result<std::string> amlnode_layers(const ImageRequest& request, const BuilderConfig& config,
                                   std::vector<ContextFile>& files) {
  const auto& python = request.environment.python;
  std::string layers;
  if (has_conda_layer(python) || has_pip_layer(python)) layers += "USER root\n";
  if (has_pip_layer(python) && config.local_wheel_dir) {
    if (auto added = add_wheels(*config.local_wheel_dir, config.max_context_bytes, files); !added) {
      return added.error();
    }
    layers += "COPY " + std::string(kWheelDirInContext) + " " + kWheelDirInImage + "\n";
  }
  if (has_conda_layer(python)) {
    if (python.conda_dependencies_file) {
      auto content = read_context_file(*python.conda_dependencies_file, config.max_context_bytes);
      if (!content) return content.error();
      files.push_back({kCondaFileInContext, std::move(*content)});
    }
    layers += conda_layer(python, config);
    layers += "ENV PATH=" + std::string(kCondaPrefixInImage) + "/bin:$PATH\n";
  }
  if (has_pip_layer(python)) {
    if (python.pip_requirements_file) {
      auto content = read_context_file(*python.pip_requirements_file, config.max_context_bytes);
      if (!content) return content.error();
      files.push_back({kRequirementsInContext, std::move(*content)});
    }
    layers += pip_layer(python, config);
  }
  layers += environment_layer(request.environment.environment_variables);
  return layers;
}

std::string recipe_hash(const std::string& dockerfile, const std::vector<ContextFile>& files) {
  std::string identity = "amlnode-image-v1\n" + sha256_hex(dockerfile) + "\n";
  for (const auto& file : files) identity += file.name + "\n" + sha256_hex(file.content) + "\n";
  return sha256_hex(identity).substr(0, 32);
}

// The plan's image, else the environment's own base image, else the configured default. The SDK's
// default image names stand for the configured defaults, so a mirror configured for an
// air-gapped site replaces them.
std::string chosen_base(const ImageRequest& request, const BuilderConfig& config) {
  if (!request.base_image.empty()) return request.base_image;
  const std::string& named = request.environment.docker.base_image;
  if (named == spec::kDefaultGpuImage) return config.default_gpu_image;
  if (!named.empty() && named != spec::kDefaultCpuImage) return named;
  return request.use_gpu ? config.default_gpu_image : config.default_cpu_image;
}

}  // namespace

ImageRequest image_request_for(const spec::Job& job, const executors::Plan& plan) {
  ImageRequest request;
  request.environment = job.environment;
  request.base_image = plan.image.value_or("");
  request.use_gpu = job.use_gpu;
  return request;
}

Result<ImageRecipe> make_recipe(const ImageRequest& request, const BuilderConfig& config) {
  ImageRecipe recipe;
  auto layers = amlnode_layers(request, config, recipe.files);
  if (!layers) return layers.error();
  const auto& dockerfile = request.environment.docker.base_dockerfile;
  if (dockerfile) {
    recipe.dockerfile = *dockerfile;
    if (!recipe.dockerfile.empty() && recipe.dockerfile.back() != '\n') recipe.dockerfile += '\n';
    recipe.dockerfile += "# amlnode layers\n" + *layers;
  } else {
    recipe.base_image = chosen_base(request, config);
    recipe.dockerfile = "FROM " + recipe.base_image + "\n" + *layers;
    recipe.base_only = layers->empty();
  }
  recipe.tag = recipe.base_only
                   ? recipe.base_image
                   : config.image_repository + ":" + recipe_hash(recipe.dockerfile, recipe.files);
  return recipe;
}

Result<std::string> make_context_tar(const ImageRecipe& recipe, std::size_t max_bytes) {
  struct Sink {
    std::string data;
    std::size_t max_bytes;
  } sink{{}, max_bytes};
  auto write = [](archive*, void* opaque, const void* buffer, size_t length) -> la_ssize_t {
    auto* out = static_cast<Sink*>(opaque);
    if (out->data.size() + length > out->max_bytes) return -1;
    out->data.append(static_cast<const char*>(buffer), length);
    return static_cast<la_ssize_t>(length);
  };
  std::unique_ptr<archive, decltype(&archive_write_free)> tar(archive_write_new(),
                                                              archive_write_free);
  archive_write_set_format_pax_restricted(tar.get());
  archive_write_set_bytes_in_last_block(tar.get(), 1);
  if (archive_write_open(tar.get(), &sink, nullptr, write, nullptr) != ARCHIVE_OK) {
    return Error{kImageBuildFailed,
                 std::string("cannot make the build context: ") + archive_error_string(tar.get())};
  }
  std::vector<ContextFile> entries{{"Dockerfile", recipe.dockerfile}};
  entries.insert(entries.end(), recipe.files.begin(), recipe.files.end());
  for (const auto& file : entries) {
    std::unique_ptr<archive_entry, decltype(&archive_entry_free)> entry(archive_entry_new(),
                                                                        archive_entry_free);
    archive_entry_set_pathname(entry.get(), file.name.c_str());
    archive_entry_set_filetype(entry.get(), AE_IFREG);
    archive_entry_set_perm(entry.get(), 0644);
    archive_entry_set_size(entry.get(), static_cast<la_int64_t>(file.content.size()));
    if (archive_write_header(tar.get(), entry.get()) != ARCHIVE_OK ||
        archive_write_data(tar.get(), file.content.data(), file.content.size()) !=
            static_cast<la_ssize_t>(file.content.size())) {
      return Error{kImageBuildFailed, "the build context is larger than " +
                                          std::to_string(max_bytes) +
                                          " bytes, the most amlnode sends to a build"};
    }
  }
  if (archive_write_close(tar.get()) != ARCHIVE_OK) {
    return Error{kImageBuildFailed, "the build context is larger than " +
                                        std::to_string(max_bytes) +
                                        " bytes, the most amlnode sends to a build"};
  }
  return std::move(sink.data);
}

}  // namespace amlnode::docker
