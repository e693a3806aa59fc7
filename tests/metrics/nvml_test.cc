#include "metrics/nvml.h"

#include <stdlib.h>

#include <catch2/catch.hpp>

#include "metrics/exposition.h"
#include "tests/metrics/metrics_test_support.h"

using namespace amlnode::metrics;

namespace {

std::unique_ptr<GpuSource> load_stand_in(const std::string& config, std::string* why = nullptr) {
  ::setenv("AMLNODE_NVML_STAND_IN", config.c_str(), 1);
  return load_nvml(AMLNODE_NVML_STAND_IN, why);
}

}  // namespace

TEST_CASE("Without NVML there is no GPU source, and no error", "[metrics]") {
  std::string why;
  CHECK(load_nvml("/nonexistent/libnvidia-ml.so.1", &why) == nullptr);
  CHECK(why.find("cannot load /nonexistent/libnvidia-ml.so.1") != std::string::npos);
  // A library that is there but is not NVML (libc has none of its entry points).
  CHECK(load_nvml("libc.so.6", &why) == nullptr);
  CHECK(why.find("lacks nvmlInit_v2") != std::string::npos);
}

TEST_CASE("The library name can be overridden for stand-ins", "[metrics]") {
  ::unsetenv("AMLNODE_NVML_LIBRARY");
  CHECK(nvml_library_name() == "libnvidia-ml.so.1");
  ::setenv("AMLNODE_NVML_LIBRARY", AMLNODE_NVML_STAND_IN, 1);
  CHECK(nvml_library_name() == AMLNODE_NVML_STAND_IN);
  ::unsetenv("AMLNODE_NVML_LIBRARY");
}

TEST_CASE("A driver that fails to initialise means no GPU source", "[metrics]") {
  std::string why;
  CHECK(load_stand_in("gpus=2;init=fail", &why) == nullptr);
  CHECK(why == "nvmlInit_v2 failed with 9");
}

TEST_CASE("Every GPU's utilisation, memory, temperature, power and ECC come from NVML",
          "[metrics]") {
  auto nvml = load_stand_in(
      "gpus=2;util=37;mem_util=12;mem_total=17179869184;mem_used=1073741824;temp=61;power=123456;"
      "ecc_corrected=3;ecc_uncorrected=1");
  REQUIRE(nvml);
  CHECK(nvml->device_count() == 2);
  std::vector<GpuSample> gpus;
  std::vector<GpuProcess> processes;
  nvml->sample(gpus, processes);
  REQUIRE(gpus.size() == 2);
  CHECK(gpus[1].index == 1);
  CHECK(gpus[1].name == "Stand-in GPU \"1\"");
  CHECK(gpus[1].uuid == "GPU-00000000-0000-0000-0000-000000000001");
  CHECK(gpus[0].utilization_percent == 37);
  CHECK(gpus[1].utilization_percent == 38);
  CHECK(gpus[0].memory_utilization_percent == 12);
  CHECK(gpus[0].memory_total == 17179869184ull);
  CHECK(gpus[0].memory_used == 1073741824ull);
  CHECK(gpus[1].temperature_celsius == 62);
  CHECK(gpus[0].power_milliwatts == 123456);
  CHECK(gpus[0].ecc_corrected == 3);
  CHECK(gpus[0].ecc_uncorrected == 1);
  CHECK(processes.empty());
}

TEST_CASE("What a device does not support is left out, not reported as zero", "[metrics]") {
  auto nvml = load_stand_in("gpus=1;no_power=1");
  REQUIRE(nvml);
  std::vector<GpuSample> gpus;
  std::vector<GpuProcess> processes;
  nvml->sample(gpus, processes);
  CHECK(gpus[0].power_milliwatts == GpuSample::unknown);
  std::string text;
  render_exposition(text, {nullptr, "", gpus, {}});
  CHECK(text.find("amlnode_gpu_temperature_celsius{gpu=\"0\"") != std::string::npos);
  CHECK(text.find("amlnode_gpu_power_watts{") == std::string::npos);
}

TEST_CASE("GPU processes and XID errors are read through NVML", "[metrics]") {
  auto nvml = load_stand_in("gpus=2;process=4242@1:536870912;process=77@0:1024;xid=1:79;xid=1:48");
  REQUIRE(nvml);
  std::vector<GpuSample> gpus;
  std::vector<GpuProcess> processes;
  nvml->sample(gpus, processes);
  REQUIRE(processes.size() == 2);
  CHECK(processes[0].pid == 77);
  CHECK(processes[0].gpu == 0);
  CHECK(processes[1].pid == 4242);
  CHECK(processes[1].gpu == 1);
  CHECK(processes[1].memory_bytes == 536870912ull);
  CHECK(gpus[0].xid_errors == 0);
  CHECK(gpus[1].xid_errors == 2);
  CHECK(gpus[1].last_xid == 48);
  // Events are counted once; the count stays.
  nvml->sample(gpus, processes);
  CHECK(gpus[1].xid_errors == 2);
}

TEST_CASE("The GPU section of the exposition passes promtool", "[metrics]") {
  auto nvml = load_stand_in("gpus=2;util=50;temp=70;ecc_corrected=2;xid=0:13");
  REQUIRE(nvml);
  std::vector<GpuSample> gpus;
  std::vector<GpuProcess> processes;
  nvml->sample(gpus, processes);
  std::string text;
  render_exposition(text, {nullptr, "", gpus, {}});
  CHECK(amlnode::test::sample_value(
            text,
            "amlnode_gpu_utilization_ratio{gpu=\"1\",uuid=\"GPU-00000000-0000-0000-0000-"
            "000000000001\",name=\"Stand-in GPU \\\"1\\\"\"}") == Approx(0.51));
  CHECK(amlnode::test::sample_value(
            text,
            "amlnode_gpu_xid_errors_total{gpu=\"0\",uuid=\"GPU-00000000-0000-0000-0000-"
            "000000000000\",name=\"Stand-in GPU \\\"0\\\"\"}") == 1);
  amlnode::test::TempDir dir;
  auto checked = amlnode::test::promtool_check(text, dir);
  INFO(checked.out << checked.err);
  CHECK(checked.exit_code == 0);
}
