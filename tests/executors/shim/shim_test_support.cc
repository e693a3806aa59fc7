#include "tests/executors/shim/shim_test_support.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>

#include "common/fs.h"
#include "tests/support/process.h"

namespace amlnode::test::shim {

using executors::ExitRecord;
using executors::LaunchedShim;
using executors::LaunchSpec;

LaunchSpec make_spec(const TempDir& dir, std::vector<std::string> argv) {
  LaunchSpec spec;
  spec.argv = std::move(argv);
  spec.env = {"PATH=/usr/local/bin:/usr/bin:/bin"};
  spec.cwd = dir.path();
  spec.log_path = dir / "std_log.txt";
  spec.state_path = dir / "shim.json";
  spec.exit_path = dir / "exit.json";
  spec.kill_grace_seconds = 1.0;
  return spec;
}

LaunchSpec make_sh_spec(const TempDir& dir, const std::string& script) {
  return make_spec(dir, {"sh", "-c", script});
}

LaunchSpec make_marked_sh_spec(const TempDir& dir, const std::string& script,
                               const std::string& marker) {
  auto spec = make_sh_spec(dir, script);
  spec.env.push_back("M=" + marker);
  return spec;
}

LaunchedShim launch(const LaunchSpec& spec, const TempDir& dir) {
  auto launcher = executors::make_shim_launcher(AMLNODE_SHIM_PATH);
  auto launched = launcher->launch(spec, dir / "launch.json", dir / "shim.log");
  if (!launched.ok()) FAIL("launch failed: " << launched.error().message);
  return *launched;
}

void require_clean_shim_exit(pid_t shim_pid) {
  // wait_command works on any child: the shim is a direct child of the launching process.
  int code = wait_command(shim_pid, std::chrono::seconds(20));
  INFO("shim exit code (-1: still running after 20 s, killed)");
  REQUIRE(code == 0);
}

ExitRecord read_exit(const LaunchSpec& spec) {
  auto text = read_file(spec.exit_path);
  if (!text.ok()) FAIL("no exit record: " << text.error().message);
  auto record = executors::exit_record_from_json(*text);
  if (!record.ok()) FAIL("exit record does not parse: " << record.error().message << "\n" << *text);
  return *record;
}

long long elapsed_ms(const ExitRecord& record) { return record.ended_at_ms - record.started_at_ms; }

std::string unique_marker() {
  static std::atomic<int> counter{0};
  char marker[40];
  std::snprintf(marker, sizeof marker, "0.000%07d%04d", static_cast<int>(::getpid()), ++counter);
  return marker;
}

MarkerCleanup::~MarkerCleanup() {
  for (pid_t pid : processes_with_marker(marker_)) ::kill(pid, SIGKILL);
}

}  // namespace amlnode::test::shim
