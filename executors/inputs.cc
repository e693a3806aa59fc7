#include "executors/inputs.h"

#include <filesystem>

namespace amlnode::executors {
namespace fs = std::filesystem;

namespace {

Result<void> stage_one(const StagedInput& input) {
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
  fs::create_directories(input.target.parent_path(), ec);
  if (ec) return fail("cannot create the folder for");
  if (input.mode == spec::InputMode::Mount) {
    fs::create_symlink(fs::absolute(input.source), input.target, ec);
    return ec ? fail("cannot link") : ok();
  }
  fs::copy(input.source, input.target,
           fs::copy_options::recursive | fs::copy_options::copy_symlinks, ec);
  return ec ? fail("cannot copy") : ok();
}

}  // namespace

Result<void> stage_inputs(const std::vector<StagedInput>& inputs) {
  for (const auto& input : inputs) {
    auto staged = stage_one(input);
    if (!staged.ok()) return staged;
  }
  return ok();
}

}  // namespace amlnode::executors
