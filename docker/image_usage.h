#pragma once

// Last-used times of environment images and the lock that makes one build per tag. Docker labels
// are fixed at build time, so the last use lives beside the agent's state instead: one small file
// per tag under <state_dir>/images, whose modification time is the last use. The build lock is an
// flock on a file there, which serialises builds of the same tag across threads (each lock opens
// its own descriptor) and across amlnode processes sharing the state directory.

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/result.h"

namespace amlnode::docker {

using SystemTime = std::chrono::system_clock::time_point;

// Held while one tag is being built; released on destruction.
class BuildLock {
 public:
  BuildLock(std::unique_lock<std::mutex> in_process, int fd);
  ~BuildLock();
  BuildLock(BuildLock&& other) noexcept;
  BuildLock& operator=(BuildLock&&) = delete;
  BuildLock(const BuildLock&) = delete;
  BuildLock& operator=(const BuildLock&) = delete;

 private:
  std::unique_lock<std::mutex> in_process_;
  int fd_ = -1;
};

class ImageUsage {
 public:
  // `dir` empty: nothing is recorded and locks are in-process only.
  explicit ImageUsage(std::filesystem::path dir);

  void record(const std::string& tag, SystemTime when = std::chrono::system_clock::now());
  std::optional<SystemTime> last_used(const std::string& tag) const;

  // Blocks until this thread holds the build lock of `tag`.
  Result<BuildLock> lock(const std::string& tag);

 private:
  std::filesystem::path file_for(const std::string& tag, const char* suffix) const;

  std::filesystem::path dir_;
  std::mutex mutexes_guard_;
  // One mutex per tag this process has built; a handful over a process's life.
  std::map<std::string, std::unique_ptr<std::mutex>> mutexes_;
};

}  // namespace amlnode::docker
