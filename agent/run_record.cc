#include "agent/run_record.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "common/fs.h"
#include "common/json.h"

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

// format_utc's text back to a time; nullopt for anything else.
std::optional<std::chrono::system_clock::time_point> parse_utc(const nlohmann::json& value) {
  if (!value.is_string()) return std::nullopt;
  std::tm tm{};
  int millis = 0;
  char zone = 0;
  if (std::sscanf(value.get<std::string>().c_str(), "%d-%d-%dT%d:%d:%d.%3d%c", &tm.tm_year,
                  &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &millis,
                  &zone) != 8 ||
      zone != 'Z') {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return std::chrono::system_clock::from_time_t(::timegm(&tm)) + std::chrono::milliseconds(millis);
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

std::optional<RunRecord> RunRecord::load(const std::filesystem::path& file,
                                         std::shared_ptr<Clock> clock) {
  auto text = read_file(file, 1 << 20);
  if (!text.ok()) return std::nullopt;
  auto in = parse_untrusted_json(*text);
  if (!in.is_object() || !in.contains("run_id") || !in["run_id"].is_string()) return std::nullopt;
  auto status = spec::run_status_from_string(in.value("status", ""));
  if (!status) return std::nullopt;
  RunRecord record(file, in["run_id"].get<std::string>(), in.value("experiment_name", ""),
                   std::move(clock));
  record.status_ = *status;
  const nlohmann::json timings = in.value("timings", nlohmann::json::object());
  for (auto [name, phase] : {std::pair{"queued_at", RunStatus::Queued},
                             {"preparing_at", RunStatus::Preparing},
                             {"running_at", RunStatus::Running},
                             {"finalizing_at", RunStatus::Finalizing}}) {
    if (auto at = parse_utc(timings.value(name, nlohmann::json()))) record.entered_[phase] = *at;
  }
  if (auto end = parse_utc(timings.value("ended_at", nlohmann::json()));
      end && spec::is_terminal(*status)) {
    record.entered_[*status] = *end;
  }
  if (in.contains("exit_code") && in["exit_code"].is_number_integer())
    record.exit_code_ = in["exit_code"].get<int>();
  if (in.contains("error") && in["error"].is_object())
    record.error_ = Error{in["error"].value("code", ""), in["error"].value("message", "")};
  if (in.contains("environment") && in["environment"].is_object()) {
    const auto& env = in["environment"];
    record.environment_kind_ = env.value("kind", "");
    record.environment_hash_ = env.value("hash", "");
    if (env.contains("image") && env["image"].is_string()) record.image_ = env["image"];
  }
  record.job_file_ = in.value("job_file", "");
  return record;
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
