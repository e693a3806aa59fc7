// systemd/amlnode.service and systemd/amlnode.yml as systemd and the agent read them.

#include <unistd.h>

#include <catch2/catch.hpp>
#include <iostream>
#include <regex>
#include <sstream>

#include "agent/config.h"
#include "agent/daemon/log_setup.h"
#include "agent/daemon/settings.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;

namespace {

const std::filesystem::path kSystemdDir = std::filesystem::path(AMLNODE_SOURCE_DIR) / "systemd";

bool have_program(const std::string& name) {
  return test::run_command({"sh", "-c", "command -v " + name}).exit_code == 0;
}

// The unit as installed for this build: ExecStart names the amlnode under test (verify checks that
// the command exists and is executable).
std::filesystem::path installable_unit(const test::TempDir& dir, const std::string& text) {
  std::string unit = std::regex_replace(text, std::regex("/usr/bin/amlnode "),
                                        test::amlnode_binary().string() + " ");
  return dir.write("amlnode.service", unit);
}

test::CommandResult verify(const std::filesystem::path& unit) {
  return test::run_command({"systemd-analyze", "verify", "--man=no", unit.string()});
}

// The value of `key=` in the unit ("" when absent; the last one when repeated).
std::string setting(const std::string& unit, const std::string& key) {
  std::istringstream lines(unit);
  std::string value;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(key + "=", 0) == 0) value = line.substr(key.size() + 1);
  }
  return value;
}

}  // namespace

TEST_CASE("systemd-analyze verify accepts the unit without a single complaint", "[systemd]") {
  if (!have_program("systemd-analyze")) {
    std::cout << "SKIPPED: systemd-analyze is not installed (package systemd)\n";
    return;
  }
  test::TempDir dir;
  auto result = verify(installable_unit(dir, test::slurp(kSystemdDir / "amlnode.service")));
  INFO(result.out << result.err);
  CHECK(result.exit_code == 0);
  // verify exits 0 on settings it ignores; any line at all is a setting systemd did not take.
  CHECK(result.out + result.err == "");

  SECTION("the check is real: a misspelt setting is reported") {
    test::TempDir broken;
    auto text = test::slurp(kSystemdDir / "amlnode.service");
    text = std::regex_replace(text, std::regex("OOMPolicy=continue"), "OOMPolicy=carry-on");
    auto complaint = verify(installable_unit(broken, text));
    CHECK(complaint.out + complaint.err != "");
  }
}

TEST_CASE("the unit is a notify service whose runs outlive the agent", "[systemd]") {
  std::string unit = test::slurp(kSystemdDir / "amlnode.service");
  CHECK(setting(unit, "Type") == "notify");
  CHECK_FALSE(setting(unit, "WatchdogSec").empty());
  CHECK(setting(unit, "Restart") == "on-failure");
  CHECK(setting(unit, "KillMode") == "process");
  CHECK(setting(unit, "Delegate") == "yes");
  // A job killed by the OOM killer must not take the whole unit down.
  CHECK(setting(unit, "OOMPolicy") == "continue");
  CHECK(setting(unit, "StateDirectory") == "amlnode");
  CHECK(setting(unit, "ConfigurationDirectory") == "amlnode");
  CHECK(setting(unit, "ExecReload") == "/bin/kill -HUP $MAINPID");
  CHECK(setting(unit, "User") == "amlnode");
  // A private /tmp is deleted when the agent stops, under runs that are still going.
  CHECK(setting(unit, "PrivateTmp").empty());
  CHECK(setting(unit, "MemoryDenyWriteExecute").empty());  // JIT compilers in jobs
}

TEST_CASE("the default config reads, and until it names a control plane the agent says so",
          "[systemd]") {
  test::TempDir dir;
  auto result = test::run_command({test::amlnode_binary().string(), "agent", "--config",
                                   (kSystemdDir / "amlnode.yml").string(), "--state-dir",
                                   (dir / "state").string()});
  INFO(result.out << result.err);
  // Exit 2 (a config error), which the unit's RestartPreventExitStatus= does not restart.
  CHECK(result.exit_code == 2);
  CHECK(result.err.find("control_plane.url: required") != std::string::npos);

  // With the address filled in, every other default is valid as shipped.
  auto text = test::slurp(kSystemdDir / "amlnode.yml");
  text = std::regex_replace(text, std::regex("# url: "), "url: ");
  auto file = dir.write("config.yml", text);
  auto config = agent::load_node_config(file);
  REQUIRE(config.ok());
  auto settings = agent::read_agent_settings(*config);
  REQUIRE(settings.ok());
  CHECK(settings->endpoint.host == "controlplane.example");
  CHECK(settings->labels.at("compute_name") == "cpu-cluster");
  CHECK(settings->run_concurrency == 1);
  auto log = agent::resolve_log_options(config->log, "log.", {});
  REQUIRE(log.ok());
  CHECK(log->level == spdlog::level::info);
  CHECK(config->state_dir == std::filesystem::path("/var/lib/amlnode"));
}
