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
  if (report.deregister) body["deregister"] = true;
  return body;
}

json command_json(const Command& command) {
  json out = {{"type", command.type}};
  if (!command.run_id.empty()) out["run_id"] = command.run_id;
  if (!command.reason.empty()) out["reason"] = command.reason;
  return out;
}

json leased_run_json(const LeasedRun& run) {
  json out = {{"run_id", run.run_id},
              {"epoch", run.epoch},
              {"experiment_name", run.experiment_name},
              {"job", {{"text", run.job_text}, {"file_name", run.job_file_name}}}};
  if (run.node_count > 1) out["share"] = leased_share_json(run);
  out.update(leased_compute_json(run));
  return out;
}

json leased_compute_json(const LeasedRun& run) {
  json out = json::object();
  if (!run.node_id.empty()) out["node_id"] = run.node_id;
  if (!run.compute_name.empty()) {
    json compute = {{"name", run.compute_name}};
    if (!run.compute_kind.empty()) compute["kind"] = run.compute_kind;
    if (!run.batch_pool_id.empty()) compute["pool_id"] = run.batch_pool_id;
    if (!run.batch_account_name.empty()) compute["account_name"] = run.batch_account_name;
    out["compute"] = compute;
  }
  return out;
}

json leased_share_json(const LeasedRun& run) {
  if (run.node_count <= 1) return nullptr;
  json nodes = json::array();
  for (const auto& node : run.nodes)
    nodes.push_back({{"node_id", node.node_id}, {"address", node.address}});
  json share = {{"node_rank", run.node_rank},
                {"node_count", run.node_count},
                {"master_port", run.master_port},
                {"nodes", nodes}};
  if (!run.launch_token.empty()) share["launch_token"] = run.launch_token;
  return share;
}

std::string to_string(LaunchState state) {
  switch (state) {
    case LaunchState::Pending:
      return "pending";
    case LaunchState::Running:
      return "running";
    case LaunchState::Exited:
      return "exited";
  }
  return "pending";
}

std::optional<LaunchState> launch_state_from_string(const std::string& text) {
  for (auto state : {LaunchState::Pending, LaunchState::Running, LaunchState::Exited})
    if (to_string(state) == text) return state;
  return std::nullopt;
}

namespace {

// A leased run's "share" (a run across nodes): its node rank within the node count, and one node
// per rank.
Result<void> read_share(const json& item, LeasedRun& run) {
  auto share = item.find("share");
  if (share == item.end()) return ok();
  return read_leased_share(*share, run);
}

}  // namespace

Result<void> read_leased_share(const json& share_object, LeasedRun& run) {
  if (share_object.is_null()) return ok();
  const json* share = &share_object;
  if (!share->is_object()) return bad_answer("a leased run's share is not an object");
  auto rank = share->find("node_rank");
  auto count = share->find("node_count");
  auto nodes = share->find("nodes");
  if (rank == share->end() || !rank->is_number_integer() || count == share->end() ||
      !count->is_number_integer() || nodes == share->end() || !nodes->is_array())
    return bad_answer("a leased run's share needs node_rank, node_count and nodes");
  auto node_count = count->get<std::int64_t>();
  auto node_rank = rank->get<std::int64_t>();
  if (node_count < 2 || node_count > kMaxNodeCount || node_rank < 0 || node_rank >= node_count ||
      static_cast<std::int64_t>(nodes->size()) != node_count)
    return bad_answer("a leased run's share has node_rank " + std::to_string(node_rank) +
                      " of node_count " + std::to_string(node_count) + " with " +
                      std::to_string(nodes->size()) + " nodes");
  for (const auto& node : *nodes) {
    auto id = node.is_object() ? node.find("node_id") : node.end();
    auto address = node.is_object() ? node.find("address") : node.end();
    if (!node.is_object() || id == node.end() || !id->is_string() || address == node.end() ||
        !address->is_string())
      return bad_answer("a leased run's share nodes need a node_id and an address");
    run.nodes.push_back({id->get<std::string>(), address->get<std::string>()});
  }
  auto port = share->find("master_port");
  if (port != share->end()) {
    if (!port->is_number_integer() || port->get<std::int64_t>() < 1 ||
        port->get<std::int64_t>() > 65535)
      return bad_answer("a leased run's share has no valid master_port");
    run.master_port = port->get<int>();
  }
  auto token = share->find("launch_token");
  if (token != share->end()) {
    if (!token->is_string()) return bad_answer("a leased run's share launch_token is not a string");
    run.launch_token = token->get<std::string>();
  }
  run.node_rank = static_cast<int>(node_rank);
  run.node_count = static_cast<int>(node_count);
  return ok();
}

// The optional node_id and compute of a lease; each field a string when it is there.
Result<void> read_leased_compute(const json& item, LeasedRun& run) {
  if (!item.is_object()) return bad_answer("a leased run's compute fields are not an object");
  auto text = [](const json& object, const char* key, std::string& out) -> bool {
    auto found = object.find(key);
    if (found == object.end()) return true;
    if (!found->is_string()) return false;
    out = found->get<std::string>();
    return true;
  };
  if (!text(item, "node_id", run.node_id))
    return bad_answer("a leased run's node_id is not a string");
  auto compute = item.find("compute");
  if (compute == item.end()) return ok();
  if (!compute->is_object()) return bad_answer("a leased run's compute is not an object");
  if (!text(*compute, "name", run.compute_name) || !text(*compute, "kind", run.compute_kind) ||
      !text(*compute, "pool_id", run.batch_pool_id) ||
      !text(*compute, "account_name", run.batch_account_name))
    return bad_answer("a leased run's compute has a field that is not a string");
  return ok();
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
  if (auto share = read_share(item, run); !share.ok()) return share.error();
  if (auto compute = read_leased_compute(item, run); !compute.ok()) return compute.error();
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
