// A stand-in for NVIDIA's libnvidia-ml.so.1, for tests on machines without NVIDIA GPUs. It exports
// the NVML C entry points the agent looks up, with the real signatures and struct layouts
// (metrics/nvml_types.h), and answers values configured by $AMLNODE_NVML_STAND_IN, read at
// nvmlInit_v2:
//
//   gpus=2;util=37;mem_util=12;mem_total=17179869184;mem_used=1073741824;temp=61;power=123456;
//   ecc_corrected=3;ecc_uncorrected=1;process=4242@1:536870912;xid=1:79;init=fail;no_power=1;
//   retired_pending=1;config_file=/path
//
// `config_file=PATH` makes the stand-in read PATH (the same syntax, over the variable's) again at
// every nvmlDeviceGetCount_v2, so a test can change what the GPUs report while the agent runs.
//
// Per device, util and temp are the configured value plus the device's index, so tests can tell
// devices apart. `process=PID@GPU:BYTES` and `xid=GPU:CODE` may repeat; each xid is delivered once
// by nvmlEventSetWait_v2. `init=fail` makes nvmlInit_v2 fail as it does without a driver;
// `no_power=1` makes nvmlDeviceGetPowerUsage answer NOT_SUPPORTED.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "metrics/nvml_types.h"

// The event set the stand-in hands out; NVML's own is opaque to callers.
struct nvmlEventSet_st {
  int unused;
};

namespace {

nvmlEventSet_st event_set;

struct Process {
  unsigned pid;
  unsigned gpu;
  unsigned long long bytes;
};

struct Config {
  unsigned gpus = 1;
  unsigned util = 0, mem_util = 0, temp = 40, power = 100000;
  unsigned long long mem_total = 16ull << 30, mem_used = 0, ecc_corrected = 0, ecc_uncorrected = 0;
  bool init_fails = false, no_power = false, retired_pending = false;
  std::string config_file;
  std::vector<Process> processes;
  std::vector<std::pair<unsigned, unsigned long long>> xids;  // pending events
};

Config config;
char devices[64];  // a handle is the address of one of these bytes
bool registered[64];

unsigned long long number(const std::string& text) {
  return std::strtoull(text.c_str(), nullptr, 10);
}

void apply(const std::string& key, const std::string& value) {
  if (key == "gpus") config.gpus = static_cast<unsigned>(number(value)) % 64;
  if (key == "util") config.util = static_cast<unsigned>(number(value));
  if (key == "mem_util") config.mem_util = static_cast<unsigned>(number(value));
  if (key == "temp") config.temp = static_cast<unsigned>(number(value));
  if (key == "power") config.power = static_cast<unsigned>(number(value));
  if (key == "mem_total") config.mem_total = number(value);
  if (key == "mem_used") config.mem_used = number(value);
  if (key == "ecc_corrected") config.ecc_corrected = number(value);
  if (key == "ecc_uncorrected") config.ecc_uncorrected = number(value);
  if (key == "init") config.init_fails = value == "fail";
  if (key == "no_power") config.no_power = value == "1";
  if (key == "retired_pending") config.retired_pending = value == "1";
  if (key == "config_file") config.config_file = value;
  if (key == "process") {
    auto at = value.find('@');
    auto colon = value.find(':');
    config.processes.push_back({static_cast<unsigned>(number(value.substr(0, at))),
                                static_cast<unsigned>(number(value.substr(at + 1))),
                                number(value.substr(colon + 1))});
  }
  if (key == "xid") {
    auto colon = value.find(':');
    config.xids.emplace_back(static_cast<unsigned>(number(value)), number(value.substr(colon + 1)));
  }
}

void apply_spec(const std::string& spec);

void load_config() {
  config = Config{};
  const char* text = std::getenv("AMLNODE_NVML_STAND_IN");
  apply_spec(text ? text : "");
  if (config.config_file.empty()) return;
  std::string file_path = config.config_file;
  if (std::FILE* file = std::fopen(file_path.c_str(), "r")) {
    char buffer[4096];
    std::size_t n = std::fread(buffer, 1, sizeof buffer - 1, file);
    std::fclose(file);
    buffer[n] = 0;
    std::string spec = buffer;
    while (!spec.empty() && (spec.back() == '\n' || spec.back() == ' ')) spec.pop_back();
    apply_spec(spec);
  }
  config.config_file = file_path;
}

void apply_spec(const std::string& spec) {
  std::size_t start = 0;
  while (start < spec.size()) {
    auto end = spec.find(';', start);
    if (end == std::string::npos) end = spec.size();
    std::string item = spec.substr(start, end - start);
    auto eq = item.find('=');
    if (eq != std::string::npos) apply(item.substr(0, eq), item.substr(eq + 1));
    start = end + 1;
  }
}

int index_of(nvmlDevice_t device) {
  auto* p = reinterpret_cast<char*>(device);
  if (p < devices || p >= devices + config.gpus) return -1;
  return static_cast<int>(p - devices);
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) nvmlReturn_t nvmlInit_v2() {
  load_config();
  return config.init_fails ? 9 /* NVML_ERROR_DRIVER_NOT_LOADED */ : NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlShutdown() {
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* count) {
  if (!config.config_file.empty()) load_config();
  *count = config.gpus;
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(
    unsigned int index, nvmlDevice_t* device) {
  if (index >= config.gpus) return 2;  // NVML_ERROR_INVALID_ARGUMENT
  *device = reinterpret_cast<nvmlDevice_t>(&devices[index]);
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device,
                                                                      char* name,
                                                                      unsigned int length) {
  std::snprintf(name, length, "Stand-in GPU \"%d\"", index_of(device));
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device,
                                                                      char* uuid,
                                                                      unsigned int length) {
  std::snprintf(uuid, length, "GPU-00000000-0000-0000-0000-00000000000%d", index_of(device));
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetUtilizationRates(
    nvmlDevice_t device, nvmlUtilization_t* utilization) {
  utilization->gpu = config.util + static_cast<unsigned>(index_of(device));
  utilization->memory = config.mem_util;
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t,
                                                                            nvmlMemory_t* memory) {
  memory->total = config.mem_total;
  memory->used = config.mem_used;
  memory->free = config.mem_total - config.mem_used;
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device,
                                                                             int sensor,
                                                                             unsigned int* temp) {
  if (sensor != NVML_TEMPERATURE_GPU) return 2;
  *temp = config.temp + static_cast<unsigned>(index_of(device));
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t,
                                                                            unsigned int* power) {
  if (config.no_power) return NVML_ERROR_NOT_SUPPORTED;
  *power = config.power;
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetTotalEccErrors(
    nvmlDevice_t, int error_type, int counter_type, unsigned long long* count) {
  if (counter_type != NVML_VOLATILE_ECC) return 2;
  *count = error_type == NVML_MEMORY_ERROR_TYPE_CORRECTED ? config.ecc_corrected
                                                          : config.ecc_uncorrected;
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetRetiredPagesPendingStatus(
    nvmlDevice_t, int* pending) {
  *pending = config.retired_pending ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(
    nvmlDevice_t device, unsigned int* count, nvmlProcessInfo_t* infos) {
  unsigned found = 0;
  for (const auto& p : config.processes) found += p.gpu == static_cast<unsigned>(index_of(device));
  if (found > *count) {
    *count = found;
    return NVML_ERROR_INSUFFICIENT_SIZE;
  }
  unsigned n = 0;
  for (const auto& p : config.processes) {
    if (p.gpu != static_cast<unsigned>(index_of(device))) continue;
    infos[n++] = nvmlProcessInfo_t{p.pid, p.bytes, 0xFFFFFFFF, 0xFFFFFFFF};
  }
  *count = n;
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t* set) {
  *set = &event_set;
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t) {
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceRegisterEvents(
    nvmlDevice_t device, unsigned long long types, nvmlEventSet_t) {
  int index = index_of(device);
  if (index < 0) return 2;
  registered[index] = (types & nvmlEventTypeXidCriticalError) != 0;
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t,
                                                                        nvmlEventData_t* data,
                                                                        unsigned int) {
  while (!config.xids.empty()) {
    auto [gpu, code] = config.xids.front();
    config.xids.erase(config.xids.begin());
    if (gpu >= config.gpus || !registered[gpu]) continue;
    *data = nvmlEventData_t{reinterpret_cast<nvmlDevice_t>(&devices[gpu]),
                            static_cast<unsigned long long>(nvmlEventTypeXidCriticalError), code,
                            0xFFFFFFFF, 0xFFFFFFFF};
    return NVML_SUCCESS;
  }
  return NVML_ERROR_TIMEOUT;
}

}  // extern "C"
