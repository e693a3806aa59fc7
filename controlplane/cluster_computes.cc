// Attached computes: Azure Batch pools (amlnode compute attach-batch), and the rule that a Batch
// task and a Batch pool go together.

#include "controlplane/cluster.h"

namespace amlnode::controlplane {

using spec::RunStatus;

nlohmann::json Cluster::compute_json(const ComputeRecord& compute) {
  return {{"name", compute.name},
          {"kind", compute.kind},
          {"settings", compute.settings},
          {"created_utc", format_utc(std::chrono::system_clock::time_point(
                              std::chrono::milliseconds(compute.created_at)))}};
}

const ComputeRecord* Cluster::compute_record(const std::string& name) const {
  auto found = computes_.find(name);
  return found == computes_.end() ? nullptr : &found->second;
}

nlohmann::json Cluster::list_computes() const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [name, compute] : computes_) list.push_back(compute_json(compute));
  return {{"computes", list}};
}

Result<Cluster::PutCompute> Cluster::put_compute(const ComputeRequest& request) {
  if (const ComputeRecord* existing = compute_record(request.name)) {
    if (existing->kind == request.kind && existing->settings == request.settings)
      return PutCompute{*existing, false};
    std::string how = existing->kind == kComputeKindBatch
                          ? "detach it first (amlnode compute detach " + request.name + ")"
                          : "change its scale settings with amlnode compute update, or delete it";
    return Error{kConflict, "compute " + request.name + " exists already, as " + existing->kind +
                                " " + existing->settings.dump() + "; " + how};
  }
  // A pool takes Batch tasks only: runs submitted to the name before it was a pool could not run.
  if (request.kind == kComputeKindBatch) {
    for (const auto& [id, run] : runs_) {
      if (run.record.compute_name == request.name && !spec::is_terminal(run.record.status))
        return Error{kConflict, "compute " + request.name + " has run " + id + " " +
                                    spec::to_string(run.record.status) +
                                    "; attach the pool once it has none"};
    }
  }
  ComputeRecord record{request.name, request.kind, request.settings, now_millis()};
  computes_[record.name] = record;
  changes_.push_back([record](Store& store) { return store.put_compute(record); });
  return PutCompute{record, true};
}

Result<ComputeRecord> Cluster::update_compute(const std::string& name, const ScaleUpdate& update) {
  auto found = computes_.find(name);
  if (found == computes_.end()) return Error{kNotFound, "compute " + name + " does not exist"};
  ComputeRecord& record = found->second;
  if (record.kind != kComputeKindAmlCompute)
    return Error{kInvalidRequest, "compute " + name + " is attached (" + record.kind +
                                      "): it has no scale settings of amlnode's"};
  nlohmann::json settings = record.settings;
  if (update.min_nodes) settings["min_nodes"] = *update.min_nodes;
  if (update.max_nodes) settings["max_nodes"] = *update.max_nodes;
  if (update.idle_seconds_before_scaledown)
    settings["idle_seconds_before_scaledown"] = *update.idle_seconds_before_scaledown;
  if (settings.value("min_nodes", 0) > settings.value("max_nodes", 0))
    return Error{kInvalidRequest, "min_nodes: " + settings["min_nodes"].dump() +
                                      " is above max_nodes (" + settings["max_nodes"].dump() + ")"};
  record.settings = std::move(settings);
  changes_.push_back([record](Store& store) { return store.put_compute(record); });
  return record;
}

Result<void> Cluster::remove_compute(const std::string& name, ComputeRemoval how) {
  const ComputeRecord* compute = compute_record(name);
  if (!compute) return Error{kNotFound, "compute " + name + " does not exist"};
  bool attached = compute->kind != kComputeKindAmlCompute;
  if (how == ComputeRemoval::Detach && !attached)
    return Error{kInvalidRequest, "compute " + name +
                                      " is a cluster: delete it (amlnode compute delete); detach "
                                      "is for attached computes"};
  if (how == ComputeRemoval::Delete && attached)
    return Error{kInvalidRequest, "compute " + name + " is attached (" + compute->kind +
                                      "): detach it (amlnode compute detach), which leaves it as "
                                      "it is; amlnode never deletes what it did not create"};
  for (const auto& [id, run] : runs_) {
    const RunRecord& r = run.record;
    if (r.compute_name == name && !spec::is_terminal(r.status))
      return Error{kConflict, "compute " + name + " has run " + r.run_id + " " +
                                  spec::to_string(r.status) + "; cancel it or let it end first"};
  }
  if (how == ComputeRemoval::Delete) {
    std::string members;
    for (const auto& [id, node] : nodes_)
      if (node.record.compute_name == name) members += (members.empty() ? "" : ", ") + id;
    if (!members.empty())
      return Error{kConflict, "compute " + name + " has nodes (" + members +
                                  "); they leave it first (amlnode detach, or drain and remove "
                                  "them: DELETE /v1/nodes/{id})"};
  }
  computes_.erase(name);
  scale_errors_.erase(name);
  changes_.push_back([name](Store& store) { return store.delete_compute(name); });
  return ok();
}

Result<void> Cluster::batch_refusal(const SubmitRequest& request) const {
  const ComputeRecord* compute = compute_record(request.compute_name);
  bool pool = compute && compute->kind == kComputeKindBatch;
  if (request.batch_task && !pool)
    return Error{
        kInvalidRequest,
        "azure_batch_step: a Batch task runs on an attached Azure Batch pool, and compute " +
            request.compute_name +
            " is not one (amlnode compute attach-batch NAME --pool-id POOL)"};
  if (!request.batch_task && pool)
    return Error{kInvalidRequest, "compute " + request.compute_name +
                                      " is an Azure Batch pool, which runs AzureBatchStep tasks "
                                      "(azure_batch_step) only"};
  if (pool && !request.batch_pool_id.empty() &&
      request.batch_pool_id != compute->settings.value("pool_id", ""))
    return Error{kInvalidRequest, "azure_batch_step.pool_id: the task asks for pool " +
                                      request.batch_pool_id + ", and compute " +
                                      request.compute_name + " is pool " +
                                      compute->settings.value("pool_id", "")};
  return ok();
}

}  // namespace amlnode::controlplane
