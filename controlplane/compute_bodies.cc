#include "controlplane/compute_bodies.h"

#include <algorithm>
#include <set>

#include "controlplane/json_fields.h"
#include "controlplane/tokens.h"
#include "spec/job.h"

namespace amlnode::controlplane {

namespace {

constexpr std::size_t kMaxComputeName = 64;
constexpr std::size_t kMaxPoolId = 64;
constexpr std::size_t kMaxVmSize = 64;
constexpr std::size_t kMaxDescription = 1024;

Result<void> only_fields(const nlohmann::json& body, const std::set<std::string>& known) {
  for (const auto& item : body.items()) {
    if (known.count(item.key())) continue;
    std::string list;
    for (const auto& key : known) list += (list.empty() ? "" : ", ") + key;
    return invalid_request(item.key().substr(0, 80) + ": unknown field (" + list + ")");
  }
  return ok();
}

Result<nlohmann::json> batch_settings(const nlohmann::json& body, const std::string& name) {
  if (auto known = only_fields(body, {"kind", "pool_id", "account_name"}); !known.ok())
    return known.error();
  auto pool = string_field(body, "pool_id", "pool_id", kMaxPoolId);
  if (!pool) return pool.error();
  if (!*pool || (*pool)->empty()) return missing_field("pool_id");
  if (!spec::is_batch_task_id(**pool))
    return invalid_request(
        "pool_id: expected 1-64 letters, digits, '-' or '_' (a Batch pool id), got " +
        shown(**pool));
  auto account = string_field(body, "account_name", "account_name", kMaxComputeName);
  if (!account) return account.error();
  std::string account_name = account->value_or("");
  return nlohmann::json{{"pool_id", **pool},
                        {"account_name", account_name.empty() ? name : account_name}};
}

Result<std::int64_t> count_or(const nlohmann::json& body, const char* field, std::int64_t min,
                              std::int64_t max, std::int64_t otherwise) {
  auto value = integer_field(body, field, field, min, max);
  if (!value) return value.error();
  return value->value_or(otherwise);
}

Result<nlohmann::json> cluster_settings(const nlohmann::json& body) {
  if (auto known = only_fields(body, {"kind", "vm_size", "vm_priority", "min_nodes", "max_nodes",
                                      "idle_seconds_before_scaledown", "description"});
      !known.ok())
    return known.error();
  auto vm_size = string_field(body, "vm_size", "vm_size", kMaxVmSize);
  if (!vm_size) return vm_size.error();
  std::string size = vm_size->value_or(kDefaultVmSize);
  if (size.empty() || !std::all_of(size.begin(), size.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
      }))
    return invalid_request("vm_size: expected a VM size such as STANDARD_D2_V2, got " +
                           shown(size));
  auto priority = string_field(body, "vm_priority", "vm_priority", 32);
  if (!priority) return priority.error();
  std::string vm_priority = priority->value_or(kDefaultVmPriority);
  if (vm_priority != "dedicated" && vm_priority != "lowpriority")
    return invalid_request("vm_priority: expected dedicated or lowpriority, got " +
                           shown(vm_priority));
  auto min_nodes = count_or(body, "min_nodes", 0, kMaxComputeNodes, kDefaultMinNodes);
  if (!min_nodes) return min_nodes.error();
  auto max_nodes = count_or(body, "max_nodes", 1, kMaxComputeNodes, kDefaultMaxNodes);
  if (!max_nodes) return max_nodes.error();
  if (*min_nodes > *max_nodes)
    return invalid_request("min_nodes: " + std::to_string(*min_nodes) + " is above max_nodes (" +
                           std::to_string(*max_nodes) + ")");
  auto idle = count_or(body, "idle_seconds_before_scaledown", 0, kMaxIdleSeconds,
                       kDefaultIdleSecondsBeforeScaledown);
  if (!idle) return idle.error();
  auto description = string_field(body, "description", "description", kMaxDescription);
  if (!description) return description.error();
  return nlohmann::json{{"vm_size", size},
                        {"vm_priority", vm_priority},
                        {"min_nodes", *min_nodes},
                        {"max_nodes", *max_nodes},
                        {"idle_seconds_before_scaledown", *idle},
                        {"description", description->value_or("")}};
}

}  // namespace

Result<ComputeRequest> parse_compute_put(std::string_view text, const std::string& name) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  if (!is_valid_name(name, kMaxComputeName))
    return invalid_request("the compute name: expected 1-" + std::to_string(kMaxComputeName) +
                           " letters, digits, '_' or '-' starting with a letter or digit, got " +
                           shown(name));
  auto kind = string_field(*body, "kind", "kind", 32);
  if (!kind) return kind.error();
  if (!*kind) return missing_field("kind");
  ComputeRequest request{name, **kind, {}};
  Result<nlohmann::json> settings =
      request.kind == kComputeKindBatch ? batch_settings(*body, name)
      : request.kind == kComputeKindAmlCompute
          ? cluster_settings(*body)
          : Result<nlohmann::json>(invalid_request("kind: expected amlcompute (a cluster) or "
                                                   "batch (an attached Azure Batch pool), got " +
                                                   shown(request.kind)));
  if (!settings) return settings.error();
  request.settings = std::move(*settings);
  return request;
}

Result<ScaleUpdate> parse_scale_update(std::string_view text) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  if (auto known = only_fields(*body, {"min_nodes", "max_nodes", "idle_seconds_before_scaledown"});
      !known.ok())
    return known.error();
  ScaleUpdate update;
  auto min_nodes = integer_field(*body, "min_nodes", "min_nodes", 0, kMaxComputeNodes);
  if (!min_nodes) return min_nodes.error();
  update.min_nodes = *min_nodes;
  auto max_nodes = integer_field(*body, "max_nodes", "max_nodes", 1, kMaxComputeNodes);
  if (!max_nodes) return max_nodes.error();
  update.max_nodes = *max_nodes;
  auto idle = integer_field(*body, "idle_seconds_before_scaledown", "idle_seconds_before_scaledown",
                            0, kMaxIdleSeconds);
  if (!idle) return idle.error();
  update.idle_seconds_before_scaledown = *idle;
  if (!update.min_nodes && !update.max_nodes && !update.idle_seconds_before_scaledown)
    return invalid_request(
        "expected at least one of min_nodes, max_nodes, idle_seconds_before_scaledown");
  return update;
}

}  // namespace amlnode::controlplane
