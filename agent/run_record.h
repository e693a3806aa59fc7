#pragma once

// run.json: the durable record of one run (status, exit code, error, phase timings, environment).
// Every change is written atomically so a reader (a user, `amlnode status`, a restarted agent)
// never sees a torn file, and status changes go through the shared transition rule.

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "spec/run_status.h"

namespace amlnode::agent {

class RunRecord {
 public:
  RunRecord(std::filesystem::path file, std::string run_id, std::string experiment_name,
            std::shared_ptr<Clock> clock);
  // A record saved earlier, read back with its status, times, exit code, error and environment
  // (the daemon carries on with a run's record after a restart). nullopt when `file` is missing
  // or is not a run.json.
  static std::optional<RunRecord> load(const std::filesystem::path& file,
                                       std::shared_ptr<Clock> clock);

  spec::RunStatus status() const { return status_; }
  const std::string& run_id() const { return run_id_; }

  // Moves to `to` and records when, if the rule allows it; returns false (and changes nothing)
  // otherwise.
  bool transition(spec::RunStatus to);
  void set_error(Error error) { error_ = std::move(error); }
  void set_exit_code(int code) { exit_code_ = code; }
  void set_environment(std::string kind, std::string hash, std::string image = "");
  void set_job_file(std::filesystem::path file) { job_file_ = std::move(file); }
  void add_warning(std::string warning) { warnings_.push_back(std::move(warning)); }

  nlohmann::json to_json() const;
  // `durable` fsyncs: used for the terminal status, which must survive a crash.
  Result<void> save(bool durable = false) const;

 private:
  std::filesystem::path file_;
  std::string run_id_;
  std::string experiment_name_;
  std::shared_ptr<Clock> clock_;
  spec::RunStatus status_ = spec::RunStatus::NotStarted;
  std::map<spec::RunStatus, std::chrono::system_clock::time_point> entered_;
  std::optional<Error> error_;
  std::optional<int> exit_code_;
  std::string environment_kind_;
  std::string environment_hash_;
  std::string image_;
  std::filesystem::path job_file_;
  std::vector<std::string> warnings_;
};

}  // namespace amlnode::agent
