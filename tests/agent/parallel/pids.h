#pragma once

// The pids file of tests/agent/parallel/file_names.py: a "PID FIRST-FILE" line per mini-batch a
// worker started.

#include <sys/types.h>

#include <filesystem>
#include <sstream>
#include <string>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace amlnode::test {

// The worker that started the mini-batch whose first file is `first_file`, once one has (within
// 60 s); -1 if none did.
inline pid_t worker_of(const std::filesystem::path& pids, const std::string& first_file) {
  pid_t holder = -1;
  eventually(
      [&] {
        std::error_code ec;
        if (!std::filesystem::exists(pids, ec)) return false;
        std::istringstream lines(slurp(pids));
        pid_t pid = 0;
        std::string first;
        while (lines >> pid >> first)
          if (first == first_file) holder = pid;
        return holder > 0;
      },
      std::chrono::seconds(60));
  return holder;
}

}  // namespace amlnode::test
