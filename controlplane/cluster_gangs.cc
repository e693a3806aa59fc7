// Runs across nodes: the Cluster's gang leases (all of a run's shares placed at once, or none),
// the shares' statuses combined into the run's, and what a user sees of them.

#include <algorithm>

#include "controlplane/cluster.h"

namespace amlnode::controlplane {

using spec::RunStatus;

namespace {

// How far a live share has got: a share that has completed waits for
// the others as one finalizing does, and one told to cancel is still running.
int phase_order(RunStatus status) {
  switch (status) {
    case RunStatus::NotStarted:
    case RunStatus::Queued:
      return 0;
    case RunStatus::Preparing:
      return 1;
    case RunStatus::Running:
    case RunStatus::CancelRequested:
    case RunStatus::NotResponding:
      return 2;
    default:
      return 3;
  }
}

// Running only once every share runs; Preparing as soon as one has begun.
RunStatus combined_status(const std::vector<RunStatus>& shares) {
  bool all_completed = std::all_of(shares.begin(), shares.end(),
                                   [](RunStatus s) { return s == RunStatus::Completed; });
  if (all_completed) return RunStatus::Completed;
  int least = 3, most = 0;
  for (RunStatus share : shares) {
    least = std::min(least, phase_order(share));
    most = std::max(most, phase_order(share));
  }
  if (most > 0) least = std::max(least, 1);
  static const RunStatus kPhases[] = {RunStatus::Queued, RunStatus::Preparing, RunStatus::Running,
                                      RunStatus::Finalizing};
  return kPhases[least];
}

}  // namespace

bool Cluster::holds(const RunRecord& run, const std::string& node_id) {
  if (run.share_nodes.empty()) return !run.node_id.empty() && run.node_id == node_id;
  return std::find(run.share_nodes.begin(), run.share_nodes.end(), node_id) !=
         run.share_nodes.end();
}

std::optional<int> Cluster::share_rank(const RunRecord& run, const std::string& node_id) {
  auto found = std::find(run.share_nodes.begin(), run.share_nodes.end(), node_id);
  if (found == run.share_nodes.end()) return std::nullopt;
  return static_cast<int>(found - run.share_nodes.begin());
}

std::vector<std::string> Cluster::holders(const RunRecord& run) {
  if (!run.share_nodes.empty()) return run.share_nodes;
  if (run.node_id.empty()) return {};
  return {run.node_id};
}

bool Cluster::usable(const NodeState& state) const {
  const NodeRecord& node = state.record;
  return !node.lost && !node.draining && !state.told_to_leave && node.state != "unusable" &&
         node.state != "leaving" && node.state != "preempted";
}

int Cluster::usable_nodes(const std::string& compute_name) const {
  int count = 0;
  for (const auto& [id, node] : nodes_) {
    if (node.record.compute_name == compute_name && usable(node)) ++count;
  }
  return count;
}

// The asking node first (it becomes node rank 0, the master, and its share is in this answer), then
// the other free nodes by id; empty unless the asker and enough others are free.
std::vector<std::string> Cluster::gang_nodes(const RunState& run, const std::string& asker) const {
  auto free = [&](const std::string& id) {
    const NodeState& node = nodes_.at(id);
    return node.record.compute_name == run.record.compute_name && usable(node) &&
           node.held_runs.empty() && may_lease(run, id);
  };
  if (!free(asker)) return {};
  std::vector<std::string> nodes{asker};
  for (const auto& [id, node] : nodes_) {
    if (static_cast<int>(nodes.size()) == run.record.node_count) break;
    if (id != asker && free(id)) nodes.push_back(id);
  }
  if (static_cast<int>(nodes.size()) < run.record.node_count) return {};
  return nodes;
}

LeasedRun Cluster::place_gang(RunState& run, const std::vector<std::string>& nodes) {
  RunRecord& r = run.record;
  r.epoch += 1;
  r.node_id = nodes.front();
  r.share_nodes = nodes;
  r.share_statuses.assign(nodes.size(), RunStatus::Queued);
  r.master_port = nodes_.at(nodes.front()).rendezvous_port;
  run.prepared_shares.clear();
  run.launches.clear();
  for (std::size_t rank = 0; rank < nodes.size(); ++rank) {
    const std::string& id = nodes[rank];
    run.past_holders.insert(id);
    if (std::find(r.share_past_holders.begin(), r.share_past_holders.end(), id) ==
        r.share_past_holders.end())
      r.share_past_holders.push_back(id);
    NodeState& node = nodes_.at(id);
    node.held_runs.insert(r.run_id);
    if (rank > 0) node.pending_shares.insert(r.run_id);
  }
  save(r);
  LeaseRecord lease{r.run_id, r.epoch, r.node_id, now_millis()};
  changes_.push_back([lease](Store& store) { return store.put_lease(lease); });
  computes_to_serve_.insert(r.compute_name);
  return share_lease(run, 0);
}

// The address a share's peers reach its node on: the first address it registered.
std::string Cluster::share_address(const std::string& node_id) const {
  const NodeRecord& node = nodes_.at(node_id).record;
  return node.ips.empty() ? node.hostname : node.ips.front();
}

// The lease answer for one share (node rank 0 of a run of one node: the run itself).
LeasedRun Cluster::share_lease(const RunState& run, int node_rank) const {
  const RunRecord& r = run.record;
  LeasedRun leased;
  leased.run_id = r.run_id;
  leased.epoch = r.epoch;
  leased.experiment_name = r.experiment_name;
  leased.job_text = run.job_text;
  leased.job_file_name = r.job_file_name;
  leased.node_rank = node_rank;
  leased.node_count = r.node_count;
  leased.master_port = r.master_port;
  for (const auto& id : r.share_nodes) leased.nodes.push_back({id, share_address(id)});
  if (r.node_count > 1) leased.launch_token = launch_token(r.run_id, r.epoch);
  leased.node_id =
      node_rank < static_cast<int>(r.share_nodes.size()) ? r.share_nodes[node_rank] : r.node_id;
  leased.compute_name = r.compute_name;
  if (const ComputeRecord* compute = compute_record(r.compute_name)) {
    leased.compute_kind = compute->kind;
    leased.batch_pool_id = compute->settings.value("pool_id", "");
    leased.batch_account_name = compute->settings.value("account_name", "");
  }
  return leased;
}

RunStatus Cluster::update_share_status(RunState& run, const std::string& node_id,
                                       const StatusReport& report) {
  RunRecord& r = run.record;
  auto rank = share_rank(r, node_id);
  if (!rank || spec::is_terminal(r.status)) return r.status;
  RunStatus& share = r.share_statuses[*rank];
  if (!spec::can_transition(share, report.status)) return r.status;
  share = report.status;
  if (*rank == 0) {
    for (const auto& [key, value] : report.timings.items()) r.timings[key] = value;
  }
  if (report.dropped_logs.is_object()) {
    for (const auto& [stream, what] : report.dropped_logs.items()) r.dropped_logs[stream] = what;
  }
  if (report.status == RunStatus::Failed || report.status == RunStatus::Canceled) {
    // The first share to fail (or to be canceled) ends the run; the error says whose it was.
    if (report.exit_code) r.exit_code = report.exit_code;
    if (report.error.is_object()) {
      r.error = report.error;
      r.error["node_rank"] = *rank;
    }
    finish(run, report.status);
    save(r);
    return r.status;
  }
  RunStatus combined = combined_status(r.share_statuses);
  if (combined == RunStatus::Completed) {
    if (report.exit_code) r.exit_code = report.exit_code;
    finish(run, RunStatus::Completed);
  } else {
    // A share on a lost node keeps the run NotResponding whatever the others say.
    bool share_lost = false;
    for (const auto& id : r.share_nodes) {
      auto node = nodes_.find(id);
      share_lost = share_lost || node == nodes_.end() || node->second.record.lost;
    }
    if (!(r.status == RunStatus::NotResponding && share_lost) &&
        spec::can_transition(r.status, combined) && r.status != combined) {
      if (combined == RunStatus::Running && r.started_at == 0) r.started_at = now_millis();
      r.status = combined;
      r.not_responding_since = 0;
    }
  }
  save(r);
  return r.status;
}

nlohmann::json Cluster::run_view(const RunRecord& r) const {
  nlohmann::json view = run_json(r);
  view["node_count"] = r.node_count;
  if (r.node_count <= 1) return view;
  nlohmann::json shares = nlohmann::json::array();
  for (std::size_t rank = 0; rank < r.share_nodes.size(); ++rank) {
    const std::string& id = r.share_nodes[rank];
    shares.push_back({{"node_rank", rank},
                      {"node_id", id},
                      {"status", spec::to_string(r.share_statuses.at(rank))}});
  }
  view["shares"] = shares;
  if (r.status == RunStatus::Queued && r.share_nodes.empty()) {
    int usable_count = usable_nodes(r.compute_name);
    view["queue_reason"] = r.node_count > usable_count
                               ? "needs " + std::to_string(r.node_count) + " nodes; compute " +
                                     r.compute_name + " has " + std::to_string(usable_count) +
                                     " usable"
                               : "waiting for " + std::to_string(r.node_count) +
                                     " nodes of compute " + r.compute_name + " to be free at once";
  }
  return view;
}

void Cluster::set_rendezvous_port(const std::string& node_id, int port) {
  if (auto node = nodes_.find(node_id); node != nodes_.end()) node->second.rendezvous_port = port;
}

bool Cluster::share_prepared(const std::string& run_id, const std::string& node_id) {
  RunState& run = runs_.at(run_id);
  const RunRecord& r = run.record;
  if (auto rank = share_rank(r, node_id)) run.prepared_shares.insert(*rank);
  for (std::size_t rank = 0; rank < r.share_nodes.size(); ++rank) {
    bool past = phase_order(r.share_statuses[rank]) >= 2;
    if (!past && !run.prepared_shares.count(static_cast<int>(rank))) return false;
  }
  return !r.share_nodes.empty();
}

std::set<std::string> Cluster::take_computes_to_serve() {
  return std::exchange(computes_to_serve_, {});
}

}  // namespace amlnode::controlplane
