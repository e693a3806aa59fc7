#include "agent/run_record.h"

#include <unistd.h>

#include "common/fs.h"

namespace amlnode::agent {

using spec::RunStatus;

namespace {

nlohmann::json time_or_null(
    const std::map<RunStatus, std::chrono::system_clock::time_point>& entered, RunStatus status) {
  auto it = entered.find(status);
  return it == entered.end() ? nlohmann::json(nullptr) : nlohmann::json(format_utc(it->second));
}

std::optional<std::chrono::system_clock::time_point> ended_at(
    const std::map<RunStatus, std::chrono::system_clock::time_point>& entered) {
  for (auto status : {RunStatus::Completed, RunStatus::Failed, RunStatus::Canceled}) {
    if (auto it = entered.find(status); it != entered.end()) return it->second;
  }
  return std::nullopt;
}

std::string host_name() {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

}  // namespace

RunRecord::RunRecord(std::filesystem::path file, std::string run_id, std::string experiment_name,
                     std::shared_ptr<Clock> clock)
    : file_(std::move(file)),
      run_id_(std::move(run_id)),
      experiment_name_(std::move(experiment_name)),
      clock_(std::move(clock)) {
  entered_[status_] = clock_->now();
}

bool RunRecord::transition(RunStatus to) {
  if (!spec::can_transition(status_, to)) return false;
  status_ = to;
  entered_.emplace(to, clock_->now());
  return true;
}

void RunRecord::set_environment(std::string kind, std::string hash, std::string image) {
  environment_kind_ = std::move(kind);
  environment_hash_ = std::move(hash);
  image_ = std::move(image);
}

nlohmann::json RunRecord::to_json() const {
  // Phase durations: each phase runs from its own start to the start of whatever came next.
  std::vector<std::pair<const char*, RunStatus>> phases = {{"queued", RunStatus::Queued},
                                                           {"preparing", RunStatus::Preparing},
                                                           {"running", RunStatus::Running},
                                                           {"finalizing", RunStatus::Finalizing}};
  nlohmann::json timings = nlohmann::json::object();
  nlohmann::json durations = nlohmann::json::object();
  auto end = ended_at(entered_);
  for (std::size_t i = 0; i < phases.size(); ++i) {
    auto [name, status] = phases[i];
    timings[std::string(name) + "_at"] = time_or_null(entered_, status);
    auto start = entered_.find(status);
    if (start == entered_.end()) continue;
    std::optional<std::chrono::system_clock::time_point> stop;
    for (auto it = entered_.upper_bound(status); it != entered_.end() && !stop; ++it) {
      stop = it->second;
    }
    if (!stop) stop = end;
    if (stop) {
      durations[std::string(name) + "_ms"] =
          std::chrono::duration_cast<std::chrono::milliseconds>(*stop - start->second).count();
    }
  }
  timings["ended_at"] = end ? nlohmann::json(format_utc(*end)) : nlohmann::json(nullptr);
  nlohmann::json out = {
      {"run_id", run_id_},
      {"experiment_name", experiment_name_},
      {"status", spec::to_string(status_)},
      {"exit_code", exit_code_ ? nlohmann::json(*exit_code_) : nlohmann::json(nullptr)},
      {"error", error_ ? nlohmann::json{{"code", error_->code}, {"message", error_->message}}
                       : nlohmann::json(nullptr)},
      {"environment",
       {{"kind", environment_kind_},
        {"hash", environment_hash_},
        {"image", image_.empty() ? nlohmann::json(nullptr) : nlohmann::json(image_)}}},
      {"timings", timings},
      {"durations", durations},
      {"host", host_name()},
      {"job_file", job_file_.string()},
      {"warnings", warnings_},
  };
  return out;
}

Result<void> RunRecord::save(bool durable) const {
  return write_file_atomically(file_, to_json().dump(2) + "\n", durable);
}

}  // namespace amlnode::agent
