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

Result<Cluster::Attached> Cluster::attach_batch_compute(const BatchComputeRequest& request) {
  nlohmann::json settings = {
      {"pool_id", request.pool_id},
      {"account_name", request.account_name.empty() ? request.name : request.account_name}};
  if (const ComputeRecord* existing = compute_record(request.name)) {
    if (existing->kind == kComputeKindBatch && existing->settings == settings)
      return Attached{*existing, false};
    return Error{kConflict, "compute " + request.name + " is attached already, as " +
                                existing->kind + " " + existing->settings.dump() +
                                "; detach it first (amlnode compute detach " + request.name + ")"};
  }
  ComputeRecord record{request.name, kComputeKindBatch, settings, now_millis()};
  computes_[record.name] = record;
  changes_.push_back([record](Store& store) { return store.put_compute(record); });
  return Attached{record, true};
}

Result<void> Cluster::detach_compute(const std::string& name) {
  if (!compute_record(name)) return Error{kNotFound, "compute " + name + " is not attached"};
  for (const auto& [id, run] : runs_) {
    const RunRecord& r = run.record;
    if (r.compute_name == name && !spec::is_terminal(r.status))
      return Error{kConflict, "compute " + name + " has run " + r.run_id + " " +
                                  spec::to_string(r.status) +
                                  "; cancel it or let it end before detaching"};
  }
  computes_.erase(name);
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
