#pragma once

// Whether this node's GPUs would make runs fail (docs/compute.md, "Node health"): a check of one
// NVML sample, which the daemon makes before it takes runs and at every heartbeat. A failure
// makes the node `unusable` with the reason; the node is usable again once a check passes.

#include <cstdint>
#include <string>
#include <vector>

#include "metrics/samples.h"

namespace amlnode::metrics {

struct GpuHealth {
  std::string problem;  // "" when the GPUs are fine
  // The XID errors counted so far over every device: the next check's `xids_before`.
  std::uint64_t xids = 0;
};

// Fewer devices than `expected`, an uncorrectable ECC error, pages waiting to be retired, or an
// XID error since `xids_before` (the total the last check counted), in that order; the message
// names the GPU and the count.
GpuHealth check_gpu_health(const std::vector<GpuSample>& gpus, unsigned expected,
                           std::uint64_t xids_before);

}  // namespace amlnode::metrics
