// The GPU health check (metrics/gpu_health.h) on samples as NVML gives them.

#include "metrics/gpu_health.h"

#include <catch2/catch.hpp>

using namespace amlnode::metrics;

namespace {

std::vector<GpuSample> healthy(unsigned count) {
  std::vector<GpuSample> gpus(count);
  for (unsigned i = 0; i < count; ++i) {
    gpus[i].index = i;
    gpus[i].uuid = "GPU-" + std::to_string(i);
    gpus[i].ecc_uncorrected = 0;
    gpus[i].retired_pages_pending = 0;
  }
  return gpus;
}

}  // namespace

TEST_CASE("GPU health: each failure names the GPU, and healthy GPUs pass", "[metrics][gpu]") {
  CHECK(check_gpu_health(healthy(2), 2, 0).problem.empty());
  // Unknown counters (NOT_SUPPORTED on the device) are no failure.
  auto unknown = healthy(1);
  unknown[0].ecc_uncorrected = GpuSample::unknown;
  unknown[0].retired_pages_pending = GpuSample::unknown;
  CHECK(check_gpu_health(unknown, 1, 0).problem.empty());

  CHECK(check_gpu_health(healthy(1), 2, 0).problem ==
        "GPU missing: NVML lists 1 of the 2 expected");
  auto ecc = healthy(2);
  ecc[1].ecc_uncorrected = 3;
  CHECK(check_gpu_health(ecc, 2, 0).problem == "GPU 1 (GPU-1): 3 uncorrectable ECC error(s)");
  auto pending = healthy(1);
  pending[0].retired_pages_pending = 1;
  CHECK_THAT(check_gpu_health(pending, 1, 0).problem,
             Catch::Contains("GPU 0 (GPU-0): memory pages are waiting to be retired"));
}

TEST_CASE("GPU health: an XID error fails the check that first sees it, not the later ones",
          "[metrics][gpu]") {
  auto gpus = healthy(2);
  gpus[1].xid_errors = 1;
  gpus[1].last_xid = 79;
  auto first = check_gpu_health(gpus, 2, 0);
  CHECK(first.problem == "GPU 1: XID error 79 (1 XID error(s) since the last check)");
  CHECK(first.xids == 1);
  CHECK(check_gpu_health(gpus, 2, first.xids).problem.empty());
}
