#pragma once

// Helpers for the spec tests: a project folder in a temporary directory with a training script,
// loading job files written into it, and looking up diagnostics by field path.

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "spec/load.h"
#include "tests/support/temp_dir.h"

namespace amlnode::spec::testing {

// A temporary project: `train.py` exists in its root and in `src/`.
class Project {
 public:
  Project() {
    dir_.write("train.py", "print('training')\n");
    dir_.write("src/train.py", "print('training')\n");
  }

  const std::filesystem::path& root() const { return dir_.path(); }
  std::filesystem::path write(const std::string& relative, const std::string& content) const {
    return dir_.write(relative, content);
  }
  LoadResult load(const std::string& relative, const std::string& content,
                  const LoadOptions& options = {}) const {
    return load_job_file(write(relative, content), options);
  }

 private:
  amlnode::test::TempDir dir_;
};

// Every diagnostic as "path: message", one a line, for failure output.
inline std::string listing(const std::vector<Diagnostic>& diagnostics) {
  std::string out;
  for (const auto& diagnostic : diagnostics) out += diagnostic.to_string() + "\n";
  return out;
}

// The first diagnostic at `path` whose message contains `fragment`, or nullptr.
inline const Diagnostic* find(const std::vector<Diagnostic>& diagnostics, const std::string& path,
                              const std::string& fragment = "") {
  for (const auto& diagnostic : diagnostics) {
    if (diagnostic.path == path && diagnostic.message.find(fragment) != std::string::npos) {
      return &diagnostic;
    }
  }
  return nullptr;
}

// A load that must succeed: fails the test with the diagnostics otherwise.
inline Job require_job(const LoadResult& result) {
  INFO(listing(result.errors));
  REQUIRE(result.ok());
  return *result.job;
}

}  // namespace amlnode::spec::testing
