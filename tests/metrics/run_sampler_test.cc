#include "metrics/run_sampler.h"

#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "tests/metrics/metrics_test_support.h"

using namespace amlnode::metrics;
using amlnode::test::ShimmedWorkload;
using amlnode::test::TempDir;
namespace fs = std::filesystem;

namespace {

constexpr double kMiB = 1 << 20;

// The workload: it holds 64 MiB and a holder child 32 MiB; it burns 0.3 s of CPU, and two
// children burn 0.2 s each and are reaped before the sample.
const std::vector<std::string> kWorkload = {
    "--alloc-mib", "64", "--cpu-ms",        "300", "--holders",   "1", "--holder-mib", "32",
    "--burners",   "2",  "--burner-cpu-ms", "200", "--write-mib", "4"};

bool on_tmpfs(const fs::path& path) {
  struct statfs info {};
  return ::statfs(path.c_str(), &info) == 0 && info.f_type == 0x01021994;  // TMPFS_MAGIC
}

}  // namespace

TEST_CASE("A run's CPU, memory, I/O and processes are summed over its tree under the shim",
          "[metrics]") {
  TempDir dir;
  ShimmedWorkload run(dir, kWorkload);
  REQUIRE(run.ready());
  RunSampler sampler("run-1", RunRoot{run.shim().pid, run.shim().start_time, true});
  const RunSample& s = sampler.sample(5000);
  CHECK(s.run_id == "run-1");
  CHECK(sampler.root_alive());
  CHECK(s.time_ms == 5000);
  CHECK_FALSE(s.from_cgroup);
  // 0.3 s + 2 x 0.2 s burnt, the reaped children's included, plus what touching 64 MiB cost, as
  // the workload measured it; the holder's own few page faults come on top. /proc counts in
  // 10 ms ticks per process.
  CHECK(s.cpu_seconds >= 0.69);
  CHECK(s.cpu_seconds == Approx(run.reported_cpu_seconds()).margin(0.05 + 0.1));
  CHECK(s.cpu_seconds >= run.reported_cpu_seconds() - 0.05);
  // 64 + 32 MiB resident, plus two small programs; the shim is not the run's.
  CHECK(s.memory_bytes >= 96 * kMiB);
  CHECK(s.memory_bytes < 96 * kMiB + 24 * kMiB);
  CHECK(s.memory_peak_bytes >= s.memory_bytes);
  CHECK(s.processes == 2);  // the workload and its holder; the burners were reaped
  if (!on_tmpfs(dir.path())) CHECK(s.io_write_bytes >= 4 * kMiB);
}

TEST_CASE("A run's peak memory stays after the memory is freed, and counters never go back",
          "[metrics]") {
  TempDir dir;
  ShimmedWorkload run(dir, {"--alloc-mib", "48", "--cpu-ms", "50"});
  REQUIRE(run.ready());
  RunSampler sampler("run-2", RunRoot{run.shim().pid, run.shim().start_time, true});
  RunSample first = sampler.sample(1);
  CHECK(first.memory_peak_bytes >= 48 * kMiB);
  // The process ends: the run now has no process, but what it used is kept.
  ::kill(run.child(), SIGKILL);
  REQUIRE(amlnode::test::eventually([&] { return sampler.sample(2).processes == 0; },
                                    std::chrono::seconds(10)));
  const RunSample& later = sampler.last();
  CHECK(later.memory_bytes == 0);
  CHECK(later.memory_peak_bytes >= first.memory_peak_bytes);
  CHECK(later.cpu_seconds >= first.cpu_seconds);
}

TEST_CASE("A reused pid is never sampled as the run", "[metrics]") {
  auto start = amlnode::executors::process_start_time(::getpid());
  REQUIRE(start);
  RunSampler sampler("run-3", RunRoot{::getpid(), *start + 1, false});
  const RunSample& s = sampler.sample(1);
  CHECK_FALSE(sampler.root_alive());
  CHECK(s.processes == 0);
  CHECK(s.memory_bytes == 0);
  CHECK(s.cpu_seconds == 0);
}

TEST_CASE("GPU memory of the run's processes is attributed to the run", "[metrics]") {
  TempDir dir;
  ShimmedWorkload run(dir, {"--alloc-mib", "1"});
  REQUIRE(run.ready());
  RunSampler sampler("run-4", RunRoot{run.shim().pid, run.shim().start_time, true});
  std::vector<GpuProcess> gpu = {{static_cast<unsigned>(run.child()), 0, 300 << 20},
                                 {static_cast<unsigned>(run.child()), 1, 100 << 20},
                                 {static_cast<unsigned>(::getpid()), 0, 999 << 20}};
  CHECK(sampler.sample(1, gpu).gpu_memory_bytes == (400u << 20));
}

TEST_CASE("A run with a cgroup of its own is measured from the cgroup", "[metrics]") {
  fs::path mount;
  for (fs::path candidate : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
    if (fs::exists(candidate / "cgroup.procs") && fs::exists(candidate / "cgroup.controllers")) {
      mount = candidate;
      break;
    }
  }
  TempDir dir;
  fs::path cgroup = mount / ("amlnode-test-" + std::to_string(::getpid()));
  std::error_code ec;
  if (mount.empty() || !fs::create_directory(cgroup, ec)) {
    WARN("no cgroup v2 can be made here; the cgroup source is not exercised");
    return;
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    std::ofstream(cgroup / "cgroup.procs") << ::getpid() << std::endl;
    std::string ready = (dir / "ready").string();
    ::execl(AMLNODE_METRICS_WORKLOAD, AMLNODE_METRICS_WORKLOAD, "--ready", ready.c_str(),
            "--cpu-ms", "200", "--burners", "1", "--burner-cpu-ms", "200", "--alloc-mib", "16",
            nullptr);
    _exit(127);
  }
  REQUIRE(amlnode::test::eventually([&] { return fs::exists(dir / "ready"); },
                                    std::chrono::seconds(30)));
  auto found = own_cgroup_of(pid);
  REQUIRE(found);
  CHECK(fs::equivalent(*found, cgroup));
  CHECK_FALSE(own_cgroup_of(::getpid()));  // the test's own cgroup is not a run's
  RunSampler sampler("run-5", RunRoot{pid, 0, false}, *found);
  const RunSample& s = sampler.sample(1);
  CHECK(s.from_cgroup);
  // usage_usec counts every process that was in the cgroup, the reaped burner included.
  double reported = std::strtod(amlnode::test::slurp(dir / "ready").c_str(), nullptr);
  CHECK(s.cpu_seconds >= 0.39);
  CHECK(s.cpu_seconds == Approx(reported).margin(0.03));
  CHECK(s.processes == 1);
  CHECK(s.memory_bytes >= 16 * kMiB);  // memory.current when the controller is on, else the tree
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  fs::remove(cgroup, ec);
}
