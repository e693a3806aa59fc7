#include "metrics/nvml.h"

#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>

#include "metrics/nvml_types.h"

namespace amlnode::metrics {

namespace {

// The entry points, as nvml.h declares them.
struct NvmlApi {
  nvmlReturn_t (*init)();
  nvmlReturn_t (*shutdown)();
  nvmlReturn_t (*get_count)(unsigned int*);
  nvmlReturn_t (*get_handle)(unsigned int, nvmlDevice_t*);
  nvmlReturn_t (*get_name)(nvmlDevice_t, char*, unsigned int);
  nvmlReturn_t (*get_uuid)(nvmlDevice_t, char*, unsigned int);
  nvmlReturn_t (*get_utilization)(nvmlDevice_t, nvmlUtilization_t*);
  nvmlReturn_t (*get_memory)(nvmlDevice_t, nvmlMemory_t*);
  nvmlReturn_t (*get_temperature)(nvmlDevice_t, int, unsigned int*);
  nvmlReturn_t (*get_power)(nvmlDevice_t, unsigned int*);
  nvmlReturn_t (*get_ecc)(nvmlDevice_t, int, int, unsigned long long*);
  nvmlReturn_t (*get_retired_pending)(nvmlDevice_t, int*);
  nvmlReturn_t (*get_processes)(nvmlDevice_t, unsigned int*, nvmlProcessInfo_t*);  // _v3 or _v2
  nvmlReturn_t (*get_processes_v1)(nvmlDevice_t, unsigned int*, nvmlProcessInfo_v1_t*);
  nvmlReturn_t (*event_set_create)(nvmlEventSet_t*);
  nvmlReturn_t (*event_set_free)(nvmlEventSet_t);
  nvmlReturn_t (*register_events)(nvmlDevice_t, unsigned long long, nvmlEventSet_t);
  nvmlReturn_t (*event_set_wait)(nvmlEventSet_t, nvmlEventData_t*, unsigned int);
};

template <class F>
void bind(void* library, const char* name, F& out) {
  out = reinterpret_cast<F>(::dlsym(library, name));
}

void bind_all(void* lib, NvmlApi& api) {
  bind(lib, "nvmlInit_v2", api.init);
  bind(lib, "nvmlShutdown", api.shutdown);
  bind(lib, "nvmlDeviceGetCount_v2", api.get_count);
  bind(lib, "nvmlDeviceGetHandleByIndex_v2", api.get_handle);
  bind(lib, "nvmlDeviceGetName", api.get_name);
  bind(lib, "nvmlDeviceGetUUID", api.get_uuid);
  bind(lib, "nvmlDeviceGetUtilizationRates", api.get_utilization);
  bind(lib, "nvmlDeviceGetMemoryInfo", api.get_memory);
  bind(lib, "nvmlDeviceGetTemperature", api.get_temperature);
  bind(lib, "nvmlDeviceGetPowerUsage", api.get_power);
  bind(lib, "nvmlDeviceGetTotalEccErrors", api.get_ecc);
  bind(lib, "nvmlDeviceGetRetiredPagesPendingStatus", api.get_retired_pending);
  bind(lib, "nvmlDeviceGetComputeRunningProcesses_v3", api.get_processes);
  if (!api.get_processes) bind(lib, "nvmlDeviceGetComputeRunningProcesses_v2", api.get_processes);
  bind(lib, "nvmlDeviceGetComputeRunningProcesses", api.get_processes_v1);
  bind(lib, "nvmlEventSetCreate", api.event_set_create);
  bind(lib, "nvmlEventSetFree", api.event_set_free);
  bind(lib, "nvmlDeviceRegisterEvents", api.register_events);
  bind(lib, "nvmlEventSetWait_v2", api.event_set_wait);
}

constexpr unsigned kMaxProcessesPerGpu = 256;
constexpr int kMaxEventsPerSample = 64;

class Nvml final : public GpuSource {
 public:
  Nvml(void* library, NvmlApi api) : library_(library), api_(api) {}
  ~Nvml() override {
    if (events_ && api_.event_set_free) api_.event_set_free(events_);
    if (api_.shutdown) api_.shutdown();
    ::dlclose(library_);
  }

  bool open(std::string* why) {
    if (nvmlReturn_t r = api_.init(); r != NVML_SUCCESS) {
      if (why) *why = "nvmlInit_v2 failed with " + std::to_string(r);
      api_.shutdown = nullptr;  // nothing to shut down
      return false;
    }
    unsigned count = 0;
    if (api_.get_count(&count) != NVML_SUCCESS) count = 0;
    enumerate(count);
    watch_xids();
    return true;
  }

  // The devices NVML lists now; a device seen before (by UUID) keeps its XID count.
  void enumerate(unsigned count) {
    std::vector<Device> listed;
    for (unsigned i = 0; i < count; ++i) {
      nvmlDevice_t handle = nullptr;
      if (api_.get_handle(i, &handle) != NVML_SUCCESS) continue;
      Device device{i, handle, "", ""};
      describe(device);
      for (const auto& known : devices_) {
        if (known.uuid.empty() || known.uuid != device.uuid) continue;
        device.xid_errors = known.xid_errors;
        device.last_xid = known.last_xid;
      }
      bool watched = false;
      for (const auto& known : devices_) watched = watched || known.handle == handle;
      if (events_ && !watched) api_.register_events(handle, nvmlEventTypeXidCriticalError, events_);
      listed.push_back(std::move(device));
    }
    devices_ = std::move(listed);
  }

  unsigned device_count() const override { return static_cast<unsigned>(devices_.size()); }

  void sample(std::vector<GpuSample>& gpus, std::vector<GpuProcess>& processes) override {
    // Asked again each time: a GPU that fell off the bus, or came back, is seen (node health).
    unsigned listed = 0;
    if (api_.get_count(&listed) == NVML_SUCCESS && listed != devices_.size()) enumerate(listed);
    gpus.resize(devices_.size());
    processes.clear();
    for (std::size_t i = 0; i < devices_.size(); ++i) read_device(devices_[i], gpus[i], processes);
    drain_xids(gpus);
  }

 private:
  struct Device {
    unsigned index;
    nvmlDevice_t handle;
    std::string uuid, name;
    std::uint64_t xid_errors = 0, last_xid = 0;
  };

  void describe(Device& device) {
    char text[NVML_DEVICE_NAME_V2_BUFFER_SIZE] = {};
    if (api_.get_name && api_.get_name(device.handle, text, sizeof text) == NVML_SUCCESS)
      device.name.assign(text, strnlen(text, sizeof text));
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE] = {};
    if (api_.get_uuid && api_.get_uuid(device.handle, uuid, sizeof uuid) == NVML_SUCCESS)
      device.uuid.assign(uuid, strnlen(uuid, sizeof uuid));
  }

  void watch_xids() {
    if (!api_.event_set_create || !api_.register_events || !api_.event_set_wait) return;
    if (api_.event_set_create(&events_) != NVML_SUCCESS) {
      events_ = nullptr;
      return;
    }
    // A device that does not support XID events (NOT_SUPPORTED) is simply not counted.
    for (auto& device : devices_)
      api_.register_events(device.handle, nvmlEventTypeXidCriticalError, events_);
  }

  void drain_xids(std::vector<GpuSample>& gpus) {
    if (!events_) return;
    for (int n = 0; n < kMaxEventsPerSample; ++n) {
      nvmlEventData_t data{};
      if (api_.event_set_wait(events_, &data, 0) != NVML_SUCCESS) break;
      if (!(data.eventType & nvmlEventTypeXidCriticalError)) continue;
      for (std::size_t i = 0; i < devices_.size(); ++i) {
        if (devices_[i].handle != data.device) continue;
        ++devices_[i].xid_errors;
        devices_[i].last_xid = data.eventData;
      }
    }
    for (std::size_t i = 0; i < gpus.size(); ++i) {
      gpus[i].xid_errors = devices_[i].xid_errors;
      gpus[i].last_xid = devices_[i].last_xid;
    }
  }

  void read_device(const Device& device, GpuSample& gpu, std::vector<GpuProcess>& processes) {
    gpu = GpuSample{};
    gpu.index = device.index;
    gpu.uuid = device.uuid;
    gpu.name = device.name;
    nvmlDevice_t d = device.handle;
    if (nvmlUtilization_t u{};
        api_.get_utilization && api_.get_utilization(d, &u) == NVML_SUCCESS) {
      gpu.utilization_percent = u.gpu;
      gpu.memory_utilization_percent = u.memory;
    }
    if (nvmlMemory_t m{}; api_.get_memory && api_.get_memory(d, &m) == NVML_SUCCESS) {
      gpu.memory_total = m.total;
      gpu.memory_used = m.used;
    }
    unsigned value = 0;
    if (api_.get_temperature &&
        api_.get_temperature(d, NVML_TEMPERATURE_GPU, &value) == NVML_SUCCESS)
      gpu.temperature_celsius = value;
    if (api_.get_power && api_.get_power(d, &value) == NVML_SUCCESS) gpu.power_milliwatts = value;
    unsigned long long count = 0;
    if (api_.get_ecc && api_.get_ecc(d, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC,
                                     &count) == NVML_SUCCESS)
      gpu.ecc_corrected = count;
    if (api_.get_ecc && api_.get_ecc(d, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC,
                                     &count) == NVML_SUCCESS)
      gpu.ecc_uncorrected = count;
    int pending = NVML_FEATURE_DISABLED;
    if (api_.get_retired_pending && api_.get_retired_pending(d, &pending) == NVML_SUCCESS)
      gpu.retired_pages_pending = pending == NVML_FEATURE_ENABLED ? 1 : 0;
    read_processes(device, processes);
  }

  void read_processes(const Device& device, std::vector<GpuProcess>& processes) {
    unsigned count = kMaxProcessesPerGpu;
    auto add = [&](unsigned pid, unsigned long long used) {
      processes.push_back({pid, device.index, used == NVML_VALUE_NOT_AVAILABLE ? 0 : used});
    };
    if (api_.get_processes) {
      if (api_.get_processes(device.handle, &count, process_buffer_.data()) != NVML_SUCCESS) return;
      for (unsigned i = 0; i < std::min(count, kMaxProcessesPerGpu); ++i)
        add(process_buffer_[i].pid, process_buffer_[i].usedGpuMemory);
    } else if (api_.get_processes_v1) {
      if (api_.get_processes_v1(device.handle, &count, process_buffer_v1_.data()) != NVML_SUCCESS)
        return;
      for (unsigned i = 0; i < std::min(count, kMaxProcessesPerGpu); ++i)
        add(process_buffer_v1_[i].pid, process_buffer_v1_[i].usedGpuMemory);
    }
  }

  void* library_;
  NvmlApi api_;
  nvmlEventSet_t events_ = nullptr;
  std::vector<Device> devices_;
  std::array<nvmlProcessInfo_t, kMaxProcessesPerGpu> process_buffer_{};
  std::array<nvmlProcessInfo_v1_t, kMaxProcessesPerGpu> process_buffer_v1_{};
};

}  // namespace

std::string nvml_library_name() {
  const char* override = std::getenv("AMLNODE_NVML_LIBRARY");
  return override && *override ? override : "libnvidia-ml.so.1";
}

std::unique_ptr<GpuSource> load_nvml(const std::string& library, std::string* why) {
  void* handle = ::dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    if (why) *why = std::string("cannot load ") + library + ": " + ::dlerror();
    return nullptr;
  }
  NvmlApi api{};
  bind_all(handle, api);
  if (!api.init || !api.get_count || !api.get_handle) {
    if (why) *why = library + " lacks nvmlInit_v2, nvmlDeviceGetCount_v2 or its handle lookup";
    ::dlclose(handle);
    return nullptr;
  }
  auto nvml = std::make_unique<Nvml>(handle, api);
  if (!nvml->open(why)) return nullptr;
  return nvml;
}

}  // namespace amlnode::metrics
