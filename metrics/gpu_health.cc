#include "metrics/gpu_health.h"

namespace amlnode::metrics {

GpuHealth check_gpu_health(const std::vector<GpuSample>& gpus, unsigned expected,
                           std::uint64_t xids_before) {
  GpuHealth health;
  for (const auto& gpu : gpus) health.xids += gpu.xid_errors;
  if (gpus.size() < expected) {
    health.problem = "GPU missing: NVML lists " + std::to_string(gpus.size()) + " of the " +
                     std::to_string(expected) + " expected";
    return health;
  }
  for (const auto& gpu : gpus) {
    std::string which = "GPU " + std::to_string(gpu.index) +
                        (gpu.uuid.empty() ? std::string() : " (" + gpu.uuid + ")");
    if (gpu.ecc_uncorrected != GpuSample::unknown && gpu.ecc_uncorrected > 0) {
      health.problem =
          which + ": " + std::to_string(gpu.ecc_uncorrected) + " uncorrectable ECC error(s)";
      return health;
    }
    if (gpu.retired_pages_pending == 1) {
      health.problem = which + ": memory pages are waiting to be retired (a GPU reset is due)";
      return health;
    }
  }
  if (health.xids > xids_before) {
    for (const auto& gpu : gpus) {
      if (gpu.xid_errors == 0) continue;
      health.problem =
          "GPU " + std::to_string(gpu.index) + ": XID error " + std::to_string(gpu.last_xid) +
          " (" + std::to_string(health.xids - xids_before) + " XID error(s) since the last check)";
    }
  }
  return health;
}

}  // namespace amlnode::metrics
