#include "metrics/node_sampler.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <vector>

#include "tests/support/temp_dir.h"

using namespace amlnode::metrics;
namespace fs = std::filesystem;

namespace {

std::uint64_t busy_ticks(const CpuTicks& t) {
  return t.user + t.nice + t.system + t.irq + t.softirq;
}

std::size_t count_proc_entries() {
  std::size_t count = 0;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    auto name = entry.path().filename().string();
    count += !name.empty() && name.find_first_not_of("0123456789") == std::string::npos;
  }
  return count;
}

void write_and_sync(const fs::path& file, std::size_t bytes) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  std::vector<char> block(1 << 20, 'z');
  for (std::size_t done = 0; done < bytes; done += block.size())
    REQUIRE(::write(fd, block.data(), block.size()) == static_cast<ssize_t>(block.size()));
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

TEST_CASE("A node sample reports this machine's CPUs, memory and load", "[metrics]") {
  amlnode::test::TempDir dir;
  NodeSampler sampler(dir.path());
  NodeSample first;
  sampler.sample(first, 1000);
  CHECK(first.time_ms == 1000);
  CHECK(first.cores.size() == static_cast<std::size_t>(::sysconf(_SC_NPROCESSORS_ONLN)));
  CHECK(first.memory_total ==
        static_cast<std::uint64_t>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGESIZE));
  CHECK(first.memory_available > 0);
  CHECK(first.memory_available <= first.memory_total);
  CHECK(first.forks > 0);
  CHECK(first.context_switches > 0);

  // Burn some CPU: the counters move forward, and the per-core ones add up to the total.
  volatile unsigned long x = 0;
  for (unsigned long i = 0; i < 200'000'000ul; ++i) x = x + i;
  NodeSample second = first;
  sampler.sample(second, 2000);
  CHECK(busy_ticks(second.cpu) > busy_ticks(first.cpu));
  std::uint64_t cores_user = 0;
  for (const auto& core : second.cores) cores_user += core.user;
  CHECK(cores_user == Approx(second.cpu.user).margin(second.cores.size() * 2));
}

TEST_CASE("A node sample counts the live processes and lists the network devices", "[metrics]") {
  amlnode::test::TempDir dir;
  NodeSampler sampler(dir.path());
  NodeSample sample;
  sampler.sample(sample, 0);
  auto listed = count_proc_entries();
  CHECK(sample.processes == Approx(listed).margin(20));
  CHECK(sample.processes >= 1);
  bool loopback = false;
  for (const auto& dev : sample.net) loopback = loopback || std::strcmp(dev.name, "lo") == 0;
  CHECK(loopback);
}

TEST_CASE("A node sample reports the state dir's filesystem and its disk's writes", "[metrics]") {
  amlnode::test::TempDir dir;
  NodeSampler sampler(dir.path());
  NodeSample before;
  sampler.sample(before, 0);
  struct statvfs info {};
  REQUIRE(::statvfs(dir.path().c_str(), &info) == 0);
  CHECK(before.fs_size == static_cast<std::uint64_t>(info.f_blocks) * info.f_frsize);
  CHECK(before.fs_available <= before.fs_free);
  if (sampler.disk().empty()) {
    WARN(
        "the temporary folder is on no block device here (tmpfs or overlay): no disk I/O to check");
    CHECK_FALSE(before.disk_found);
    return;
  }
  REQUIRE(before.disk_found);
  CHECK(std::string(before.disk_name) == sampler.disk());
  write_and_sync(dir / "written", 8 << 20);
  NodeSample after;
  sampler.sample(after, 0);
  CHECK(after.disk_written_bytes >= before.disk_written_bytes + (8u << 20));
  CHECK(after.disk_writes > before.disk_writes);
}

TEST_CASE("The block device of a path is found from mountinfo and diskstats", "[metrics]") {
  // Whatever device / is on, a folder under / on the same filesystem has the same one.
  std::string root = block_device_of("/");
  std::string etc = block_device_of("/etc");
  struct stat a {
  }, b{};
  ::stat("/", &a);
  ::stat("/etc", &b);
  if (a.st_dev == b.st_dev) CHECK(root == etc);
  CHECK(block_device_of("/proc").empty());  // procfs has no block device
}
