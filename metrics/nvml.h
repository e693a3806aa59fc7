#pragma once

// GPUs through NVML, loaded at run time with dlopen, so the agent runs unchanged on nodes without
// NVIDIA drivers: there `load` answers nullptr (and why), and the node has no GPU section.
//
// The library is `libnvidia-ml.so.1` (the name the driver installs), or $AMLNODE_NVML_LIBRARY
// when set (tests point it at a stand-in). Every entry point is looked up with dlsym; only
// nvmlInit_v2, nvmlDeviceGetCount_v2 and nvmlDeviceGetHandleByIndex_v2 are required, the rest
// leave their fields unknown when missing or NOT_SUPPORTED on a device.
//
// XID errors: the loader registers every device for nvmlEventTypeXidCriticalError on one event
// set and drains it (with a zero timeout, at most 64 events) at each sample, counting them.

#include <memory>
#include <string>
#include <vector>

#include "metrics/samples.h"

namespace amlnode::metrics {

// What a sample of the GPUs needs; the seam the daemon and the exposition see.
class GpuSource {
 public:
  virtual ~GpuSource() = default;
  // Fills `gpus` (one per device) and `processes` (every process NVML lists with GPU memory).
  virtual void sample(std::vector<GpuSample>& gpus, std::vector<GpuProcess>& processes) = 0;
  virtual unsigned device_count() const = 0;
};

// $AMLNODE_NVML_LIBRARY, else "libnvidia-ml.so.1".
std::string nvml_library_name();

// Loads and initialises NVML. nullptr when the library is absent, lacks a required entry point,
// or nvmlInit fails (no driver); `why` then says which, for one debug line.
std::unique_ptr<GpuSource> load_nvml(const std::string& library, std::string* why = nullptr);

}  // namespace amlnode::metrics
