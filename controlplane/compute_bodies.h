#pragma once

// The bodies of the compute calls (docs/protocol.md, "Computes"), read strictly: every failure
// names the field, and an unknown field is refused rather than ignored.

#include <string>
#include <string_view>

#include "common/result.h"
#include "controlplane/cluster.h"

namespace amlnode::controlplane {

// AmlCompute.provisioning_configuration's defaults.
inline constexpr const char* kDefaultVmSize = "Standard_NC6";
inline constexpr const char* kDefaultVmPriority = "dedicated";
inline constexpr std::int64_t kDefaultMinNodes = 0;
inline constexpr std::int64_t kDefaultMaxNodes = 4;
inline constexpr std::int64_t kDefaultIdleSecondsBeforeScaledown = 1800;
// Bounds of what a compute may ask for.
inline constexpr std::int64_t kMaxComputeNodes = 10000;
inline constexpr std::int64_t kMaxIdleSeconds = 30 * 24 * 3600;

// PUT /v1/computes/{name}: {"kind": "batch", "pool_id", "account_name"?} or {"kind":
// "amlcompute", "vm_size"?, "vm_priority"?, "min_nodes"?, "max_nodes"?,
// "idle_seconds_before_scaledown"?, "description"?}, with the defaults filled in.
Result<ComputeRequest> parse_compute_put(std::string_view body, const std::string& name);
// PATCH /v1/computes/{name}: {"min_nodes"?, "max_nodes"?, "idle_seconds_before_scaledown"?}, at
// least one of them.
Result<ScaleUpdate> parse_scale_update(std::string_view body);

}  // namespace amlnode::controlplane
