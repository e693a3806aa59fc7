#include "executors/inputs.h"

#include <filesystem>

#include "common/fs.h"

namespace amlnode::executors {
namespace fs = std::filesystem;

namespace {

Result<void> stage_one(const StagedInput& input, const fs::path& made_outside) {
  std::error_code ec;
  auto fail = [&](const std::string& what) -> Result<void> {
    return Error{"InputStagingFailed", "input " + input.name + ": " + what + " " +
                                           input.source.string() + ": " + ec.message()};
  };
  if (input.mode == spec::InputMode::Upload) {
    fs::create_directories(input.target, ec);
    return ec ? fail("cannot create") : ok();
  }
  if (!fs::exists(input.source, ec)) {
    return Error{"InputStagingFailed",
                 "input " + input.name + ": " + input.source.string() + " does not exist"};
  }
  // A place outside the run folder (an absolute path_on_compute) is the run's only if nothing
  // is there: it is removed when the run is released, and must not take anything else with it.
  if (input.outside_run_folder && fs::exists(fs::symlink_status(input.target, ec))) {
    return Error{"InputStagingFailed", "input " + input.name + ": path_on_compute " +
                                           input.target.string() +
                                           " exists already; the run needs a place of its own"};
  }
  fs::create_directories(input.target.parent_path(), ec);
  if (ec) return fail("cannot create the folder for");
  if (input.outside_run_folder) {
    // Recorded before it is made: a crash in between leaves a record of nothing, which is safe.
    auto recorded = append_beneath(made_outside.parent_path(), made_outside.filename(),
                                   input.target.string() + "\n");
    if (!recorded.ok()) return recorded;
  }
  if (input.mode == spec::InputMode::Mount) {
    fs::create_symlink(fs::absolute(input.source), input.target, ec);
    return ec ? fail("cannot link") : ok();
  }
  fs::copy(input.source, input.target,
           fs::copy_options::recursive | fs::copy_options::copy_symlinks, ec);
  return ec ? fail("cannot copy") : ok();
}

}  // namespace

void unstage_inputs(const fs::path& made_outside) {
  auto listed = read_file(made_outside, 1 << 20);
  if (!listed.ok()) return;
  std::string_view rest = *listed;
  while (!rest.empty()) {
    auto end = rest.find('\n');
    fs::path target(std::string(rest.substr(0, end)));
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    // Only what the planner allows there (below /tmp), however the record came to say otherwise.
    auto below = target.lexically_normal().lexically_relative("/tmp");
    if (!target.is_absolute() || below.empty() || *below.begin() == "..") continue;
    std::error_code ec;
    auto status = fs::symlink_status(target, ec);
    if (fs::is_symlink(status)) {
      fs::remove(target, ec);
    } else if (fs::exists(status)) {
      fs::remove_all(target, ec);
    }
  }
  std::error_code ec;
  fs::remove(made_outside, ec);
}

Result<void> stage_inputs(const std::vector<StagedInput>& inputs, const fs::path& made_outside) {
  for (const auto& input : inputs) {
    auto staged = stage_one(input, made_outside);
    if (!staged.ok()) return staged;
  }
  return ok();
}

}  // namespace amlnode::executors
