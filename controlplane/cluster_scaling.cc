// A cluster's size (docs/compute.md, "Scaling"): what the control plane wants it to be and which
// idle nodes it tells to leave. Creating and deleting VMs is the cloud's: the server hands the
// outcome to the scale hook (controlplane/scale_hook.h).

#include <algorithm>

#include "controlplane/cluster.h"

namespace amlnode::controlplane {

using spec::RunStatus;

namespace {

struct ScaleSettings {
  int min_nodes = 0;
  int max_nodes = 0;
  std::chrono::seconds idle{0};
};

ScaleSettings settings_of(const ComputeRecord& compute) {
  const auto& s = compute.settings;
  return {s.value("min_nodes", 0), s.value("max_nodes", 0),
          std::chrono::seconds(s.value("idle_seconds_before_scaledown", std::int64_t{0}))};
}

}  // namespace

bool Cluster::counts_toward(const NodeState& node, const std::string& compute_name) const {
  return node.record.compute_name == compute_name && !node.record.lost;
}

ComputeScale Cluster::scale_of(const std::string& compute_name) const {
  ComputeScale scale;
  const ComputeRecord* compute = compute_record(compute_name);
  auto now = clock_->now();
  ScaleSettings settings;
  if (compute && compute->kind == kComputeKindAmlCompute) settings = settings_of(*compute);
  int idle_within_grace = 0;
  for (const auto& [id, node] : nodes_) {
    if (!counts_toward(node, compute_name)) continue;
    ++scale.current;
    if (node.told_to_leave) {
      scale.leaving.push_back(id);
    } else if (!node.held_runs.empty() || !node.pending_shares.empty()) {
      ++scale.busy;
    } else if (now - node.last_busy < settings.idle) {
      ++idle_within_grace;
    }
  }
  if (auto queue = queues_.find(compute_name); queue != queues_.end()) {
    for (const auto& [seq, run_id] : queue->second)
      scale.queued_nodes += runs_.at(run_id).record.node_count;
  }
  // Runs of lost nodes come back to the queue: they are wanted as queued work already.
  for (const auto& [id, run] : runs_) {
    if (run.record.compute_name == compute_name && run.record.status == RunStatus::NotResponding)
      scale.queued_nodes += run.record.node_count;
  }
  if (!compute || compute->kind != kComputeKindAmlCompute) {
    // Attached and implicit computes are as big as the nodes that joined them.
    scale.target = scale.current;
    return scale;
  }
  // The nodes holding runs, and beyond them as many as the queued runs need or the idle nodes
  // still within their grace, whichever is more (queued work takes idle nodes first).
  int wanted = scale.busy + std::max(scale.queued_nodes, idle_within_grace);
  scale.target = std::clamp(wanted, settings.min_nodes, settings.max_nodes);
  return scale;
}

std::vector<std::string> Cluster::clusters() const {
  std::vector<std::string> names;
  for (const auto& [name, compute] : computes_)
    if (compute.kind == kComputeKindAmlCompute) names.push_back(name);
  return names;
}

void Cluster::set_scale_errors(const std::string& compute_name, nlohmann::json errors) {
  scale_errors_[compute_name] = std::move(errors);
}

// Idle nodes past idle_seconds_before_scaledown are told to leave, longest idle first, while the
// cluster has more nodes than its target (never below min_nodes).
void Cluster::tell_idle_nodes_to_leave() {
  auto now = clock_->now();
  for (const auto& name : clusters()) {
    ScaleSettings settings = settings_of(computes_.at(name));
    ComputeScale scale = scale_of(name);
    // Only nodes that can take work count as staying: a draining, unusable or preempted node
    // does not keep min_nodes for the cluster.
    int staying = 0;
    for (const auto& [id, node] : nodes_)
      if (counts_toward(node, name) && usable(node)) ++staying;
    int surplus = staying - std::max(scale.target, settings.min_nodes);
    if (surplus <= 0) continue;
    std::vector<std::pair<std::chrono::system_clock::time_point, std::string>> idle;
    for (const auto& [id, node] : nodes_) {
      if (!counts_toward(node, name) || !usable(node) || !node.held_runs.empty() ||
          !node.pending_shares.empty())
        continue;
      if (now - node.last_busy >= settings.idle) idle.emplace_back(node.last_busy, id);
    }
    std::sort(idle.begin(), idle.end());
    for (std::size_t i = 0; i < idle.size() && static_cast<int>(i) < surplus; ++i)
      nodes_.at(idle[i].second).told_to_leave = true;
  }
}

}  // namespace amlnode::controlplane
