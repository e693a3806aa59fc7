// Fuzzes loading a job file from text (spec::load_job_text), as the control plane does at submit
// and the agent does for every leased run: both shapes, the native job (YAML or JSON) and the v1
// .runconfig. The first byte of the input picks the file name, and with it the parser and the
// shape; the rest is the file's text.
//
// The loader reads the file system only below the source directory: the entry script, conda and
// pip files, a Dockerfile named by base_dockerfile. Every load is given a fixed project folder
// made once in a scratch folder as its source directory (--source-dir), holding the files the
// spec tests' projects hold, so that valid jobs get past those checks and reach the rest of the
// loader. Names a job gives as absolute paths are only looked up (stat) and never written.

#include <array>
#include <cstdint>
#include <fstream>
#include <string>

#include "fuzz/fuzz_support.h"
#include "spec/load.h"

namespace {

namespace fs = std::filesystem;
using amlnode::fuzz::check;

void write(const fs::path& file, const std::string& content) {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << content;
}

// The project every load uses: a training script in its root and in src/, and the files a job may
// name for its environment.
const fs::path& project_folder() {
  static const fs::path folder = [] {
    fs::path root = amlnode::fuzz::make_scratch_folder("job-spec");
    write(root / "train.py", "print('training')\n");
    write(root / "src" / "train.py", "print('training')\n");
    write(root / "conda.yml",
          "name: project\ndependencies:\n  - python=3.10\n  - pip:\n    - numpy\n");
    write(root / "requirements.txt", "numpy==1.26.4\n");
    write(root / "Dockerfile", "FROM ubuntu:22.04\nRUN true\n");
    return root;
  }();
  return folder;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static constexpr std::array<const char*, 3> kFileNames = {"job.yml", "job.json", "x.runconfig"};
  if (size == 0) return 0;
  const fs::path& project = project_folder();
  std::string text(amlnode::fuzz::as_text(data + 1, size - 1));
  amlnode::spec::LoadOptions options;
  options.source_dir_override = project;
  auto result = amlnode::spec::load_job_text(text, project / kFileNames[data[0] % 3], options);

  // A load gives a job or says why not, never both and never neither.
  check(result.job.has_value() != !result.errors.empty(),
        "a load returned a job with errors, or neither a job nor an error");
  // The loader turns an exception into an "internal error" diagnostic rather than crash; for the
  // fuzzer that is a crash all the same, since a malformed file must get a real reason.
  for (const auto& diagnostic : result.errors) {
    check(!diagnostic.message.empty(), "an error without a message");
    check(diagnostic.message.rfind("internal error", 0) != 0,
          "an exception escaped the loader: " + diagnostic.message);
  }
  for (const auto& warning : result.warnings) (void)warning.to_string();
  if (!result.job) return 0;

  // The parts of a job kept as JSON are serialised later (run.json, the plan); doing it here
  // checks that what the loader built is a value nlohmann can walk.
  const auto& job = *result.job;
  (void)job.unused_runconfig_sections.dump(-1, ' ', false,
                                           nlohmann::json::error_handler_t::replace);
  return 0;
}
