#include "spec/paths.h"

#include "common/fs.h"
#include "spec/reader.h"

namespace amlnode::spec::detail {
namespace fs = std::filesystem;
namespace {

constexpr std::size_t kMaxReadFile = 1 << 20;

Error invalid(std::string message) {
  return Error{"InvalidJobSpec", std::move(message)};
}

// `inner` is inside `outer` (or is it) when the relative path between them does not climb.
bool is_within(const fs::path& inner, const fs::path& outer) {
  fs::path relative = inner.lexically_relative(outer);
  return !relative.empty() && *relative.begin() != "..";
}

bool climbs_out(const fs::path& normal) {
  return normal.empty() || normal == "." || *normal.begin() == "..";
}

}  // namespace

fs::path clean_absolute(const fs::path& path, const fs::path& base) {
  fs::path full = path.is_absolute() ? path : base / path;
  full = full.lexically_normal();
  if (!full.has_filename() && full.has_relative_path()) full = full.parent_path();
  return full;
}

fs::path runconfig_project_dir(const fs::path& job_file) {
  fs::path folder = job_file.parent_path();
  std::string name = folder.filename().string();
  if ((name == ".azureml" || name == "aml_config") && folder.has_parent_path()) {
    return folder.parent_path();
  }
  return folder;
}

Result<void> check_directory(const fs::path& dir) {
  std::error_code ec;
  auto status = fs::status(dir, ec);
  if (!fs::exists(status)) return invalid(quote(dir.string()) + " does not exist");
  if (!fs::is_directory(status)) return invalid(quote(dir.string()) + " is not a directory");
  return ok();
}

Result<std::string> resolve_entry_script(std::string_view value, const fs::path& source_dir) {
  fs::path given(value);
  if (given.is_absolute()) {
    return invalid("expected a path relative to the source directory, got " + quote(value));
  }
  fs::path normal = given.lexically_normal();
  if (climbs_out(normal)) {
    return invalid(quote(value) + " points outside the source directory " +
                   quote(source_dir.string()));
  }
  fs::path full = source_dir / normal;
  std::error_code ec;
  auto status = fs::status(full, ec);
  if (!fs::exists(status)) {
    return invalid(quote(value) + " not found in the source directory " +
                   quote(source_dir.string()));
  }
  std::error_code file_ec;
  std::error_code dir_ec;
  fs::path real_file = fs::canonical(full, file_ec);
  fs::path real_dir = fs::canonical(source_dir, dir_ec);
  if (file_ec || dir_ec || !is_within(real_file, real_dir)) {
    return invalid(quote(value) + " resolves through a symbolic link to " +
                   quote(real_file.string()) + ", outside the source directory " +
                   quote(source_dir.string()));
  }
  if (!fs::is_regular_file(status)) return invalid(quote(value) + " is not a file");
  return normal.generic_string();
}

Result<fs::path> resolve_existing_file(std::string_view value, const fs::path& base) {
  fs::path full = clean_absolute(fs::path(value), base);
  std::error_code ec;
  auto status = fs::status(full, ec);
  if (!fs::exists(status)) {
    return invalid(quote(value) + " not found (looked for " + quote(full.string()) + ")");
  }
  if (!fs::is_regular_file(status)) {
    return invalid(quote(value) + " is not a file (" + quote(full.string()) + ")");
  }
  return full;
}

Result<fs::path> resolve_existing_path(std::string_view value, const fs::path& base) {
  fs::path full = clean_absolute(fs::path(value), base);
  std::error_code ec;
  if (!fs::exists(fs::status(full, ec))) {
    return invalid(quote(value) + " not found (looked for " + quote(full.string()) + ")");
  }
  return full;
}

bool is_contained_relative(std::string_view value) {
  fs::path given(value);
  return !given.is_absolute() && !climbs_out(given.lexically_normal());
}

Result<std::string> read_small_file(const fs::path& file) {
  auto content = read_file(file, kMaxReadFile);
  if (!content.ok()) return invalid(content.error().message);
  return std::move(content).value();
}

}  // namespace amlnode::spec::detail
