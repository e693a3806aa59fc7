#include "spec/wire.h"

namespace amlnode::wire {

using nlohmann::json;

namespace {

Error bad_answer(const std::string& what) {
  return Error{"BadAnswer", what};
}

}  // namespace

json heartbeat_body(const HeartbeatReport& report) {
  json runs = json::array();
  for (const auto& run : report.runs) {
    runs.push_back({{"run_id", run.run_id}, {"epoch", run.epoch}, {"status", run.status}});
  }
  json body = {{"state", report.state}, {"runs", runs}};
  if (!report.reason.empty()) body["reason"] = report.reason;
  return body;
}

json command_json(const Command& command) {
  json out = {{"type", command.type}};
  if (!command.run_id.empty()) out["run_id"] = command.run_id;
  if (!command.reason.empty()) out["reason"] = command.reason;
  return out;
}

json leased_run_json(const LeasedRun& run) {
  return {{"run_id", run.run_id},
          {"epoch", run.epoch},
          {"experiment_name", run.experiment_name},
          {"job", {{"text", run.job_text}, {"file_name", run.job_file_name}}}};
}

Result<LeasedRun> leased_run_from_json(const json& item) {
  if (!item.is_object()) return bad_answer("a leased run is not an object");
  auto run_id = item.find("run_id");
  if (run_id == item.end() || !run_id->is_string())
    return bad_answer("a leased run has no run_id string");
  auto epoch = item.find("epoch");
  if (epoch == item.end() || !epoch->is_number_integer())
    return bad_answer("a leased run has no integer epoch");
  auto job = item.find("job");
  if (job == item.end() || !job->is_object()) return bad_answer("a leased run has no job");
  auto text = job->find("text");
  if (text == job->end() || !text->is_string()) return bad_answer("a leased run's job has no text");
  // The optional fields are checked too: json::value() throws when a field is there with another
  // type, and the agent's lease call expects a Result, not an exception.
  auto experiment = item.find("experiment_name");
  if (experiment != item.end() && !experiment->is_string())
    return bad_answer("a leased run's experiment_name is not a string");
  auto file_name = job->find("file_name");
  if (file_name != job->end() && !file_name->is_string())
    return bad_answer("a leased run's job file_name is not a string");
  LeasedRun run;
  run.run_id = run_id->get<std::string>();
  run.epoch = epoch->get<std::int64_t>();
  run.experiment_name = experiment != item.end() ? experiment->get<std::string>() : "";
  run.job_text = text->get<std::string>();
  run.job_file_name = file_name != job->end() ? file_name->get<std::string>() : "job.yml";
  return run;
}

std::vector<Command> commands_from_json(const json& commands) {
  std::vector<Command> out;
  if (!commands.is_array()) return out;
  for (const auto& item : commands) {
    if (!item.is_object()) continue;
    auto text = [&](const char* key) {
      auto found = item.find(key);
      return found != item.end() && found->is_string() ? found->get<std::string>() : "";
    };
    out.push_back({text("type"), text("run_id"), text("reason")});
  }
  return out;
}

}  // namespace amlnode::wire
