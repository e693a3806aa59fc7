// `amlnode attach` end to end: a real sshd on loopback (tests/remote/test_sshd.h) standing for the
// VM a user brings, and a real control plane. The "VM" is this machine: attach installs the agent
// here as root (the binaries under /usr/local, /etc/amlnode, /var/lib/amlnode, the amlnode user),
// with no running systemd, so it takes the path of a host without one; the test removes it all
// again. It needs root and a machine with no agent installed (CI's), and says so otherwise.

#include <signal.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/agent/daemon/control_plane_process.h"
#include "tests/remote/test_sshd.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool can_attach_here() {
  std::error_code ec;
  return test::TestSshd::can_run() && !fs::exists("/etc/amlnode", ec) &&
         !fs::exists("/usr/local/bin/amlnode", ec) && !fs::exists("/run/systemd/system", ec);
}

// Removes what attach installed on this machine: the agent it started, then install.sh
// --uninstall --purge, then the Python module.
void remove_attached_agent() {
  // Only the installed agent is killed (the pid file may be stale), and it is waited for.
  test::run_command({"/bin/sh", "-c",
                     "p=$(cat /run/amlnode/agent.pid 2>/dev/null) || exit 0; case \"$(readlink "
                     "/proc/$p/exe)\" in /usr/local/bin/amlnode*) ;; *) exit 0 ;; esac; kill $p; "
                     "for i in $(seq 1 100); do kill -0 $p 2>/dev/null || exit 0; sleep 0.1; done; "
                     "kill -9 $p"});
  auto install = fs::path(AMLNODE_SOURCE_DIR) / "systemd" / "install.sh";
  test::run_command({"sh", install.string(), "--uninstall", "--purge"});
  std::error_code ec;
  fs::remove_all("/usr/local/share/amlnode", ec);
  fs::remove_all("/run/amlnode", ec);
}

struct Attaching {
  test::TestSshd sshd{true};
  test::TempDir dir;
  test::ControlPlaneProcess server{dir / "cp", {"--heartbeat-interval", "1"}};

  Attaching() { server.start(); }
  ~Attaching() { remove_attached_agent(); }

  test::CommandResult attach(const std::string& compute, std::vector<std::string> more) {
    std::vector<std::string> argv = {
        test::amlnode_binary().string(), "attach",    "127.0.0.1", "--port",
        std::to_string(sshd.port()),     "--compute", compute,     "--known-hosts",
        (dir / "known_hosts").string(),  "--json",    "--timeout", "60"};
    argv.insert(argv.end(), more.begin(), more.end());
    return test::run_command(
        argv,
        {"AMLNODE_CONTROL_PLANE=" + server.url(), "AMLNODE_USER_TOKEN=" + server.user_token()},
        180s);
  }
  test::CommandResult attach_as_root(const std::string& compute) {
    return attach(compute, {"--username", "root", "--private-key-file", sshd.key().string(),
                            "--accept-new-host-key"});
  }
  test::CommandResult detach(const std::string& compute, bool purge) {
    std::vector<std::string> argv = {test::amlnode_binary().string(),
                                     "detach",
                                     "127.0.0.1",
                                     "--port",
                                     std::to_string(sshd.port()),
                                     "--compute",
                                     compute,
                                     "--known-hosts",
                                     (dir / "known_hosts").string(),
                                     "--username",
                                     "root",
                                     "--private-key-file",
                                     sshd.key().string(),
                                     "--json"};
    if (purge) argv.push_back("--purge");
    return test::run_command(
        argv,
        {"AMLNODE_CONTROL_PLANE=" + server.url(), "AMLNODE_USER_TOKEN=" + server.user_token()},
        180s);
  }
  bool node_listed(const std::string& node_id) {
    auto [status, nodes] = server.user_call("GET", "/v1/nodes");
    REQUIRE(status == 200);
    for (const auto& node : nodes)
      if (node["nodeId"] == node_id) return true;
    return false;
  }
};

}  // namespace

TEST_CASE("amlnode attach installs the agent over SSH, the node runs a job, detach removes it all",
          "[attach]") {
  if (!can_attach_here()) {
    WARN("skipped: needs root, sshd, useradd and a machine with no amlnode installed or systemd");
    return;
  }
  Attaching t;
  // The test user has no sudo: refused at the probe, before anything is installed.
  auto password = t.dir.write("password", t.sshd.password() + "\n");
  auto no_sudo = t.attach("attached", {"--username", t.sshd.user(), "--password-file",
                                       password.string(), "--accept-new-host-key"});
  CHECK(no_sudo.exit_code == 1);
  CHECK_THAT(no_sudo.err, Catch::StartsWith("amlnode: attach: probe: no sudo"));
  std::error_code ec;
  CHECK_FALSE(fs::exists("/etc/amlnode", ec));
  // A wrong password: refused at the login, naming it.
  auto wrong = t.dir.write("wrong", "not-it\n");
  auto refused =
      t.attach("attached", {"--username", t.sshd.user(), "--password-file", wrong.string()});
  CHECK(refused.exit_code == 1);
  CHECK_THAT(refused.err, Catch::StartsWith("amlnode: attach: login: "));
  CHECK(refused.err.find("not-it") == std::string::npos);

  auto attached = t.attach_as_root("attached");
  INFO(attached.out << attached.err);
  REQUIRE(attached.exit_code == 0);
  auto report = json::parse(attached.out);
  std::string node_id = report["node_id"];
  std::string first_node = node_id;
  CHECK_FALSE(node_id.empty());
  CHECK(report["systemd"] == false);
  CHECK_THAT(report["started"].get<std::string>(), Catch::StartsWith("no running systemd"));
  CHECK(report["previous_version"] == "");
  // The registration token, spent, is gone from the host.
  CHECK_FALSE(fs::exists("/etc/amlnode/registration_token", ec));
  auto [status, nodes] = t.server.user_call("GET", "/v1/nodes");
  REQUIRE(status == 200);
  bool listed = false;
  for (const auto& node : nodes)
    listed = listed || (node["nodeId"] == node_id && node["computeName"] == "attached");
  CHECK(listed);

  // A job on the attached node, end to end.
  fs::create_directories(t.dir / "src");
  std::string id = t.server.submit(
      "command: echo hello from the attached node\n"
      "environment: {docker: {enabled: false}, python: {user_managed_dependencies: true}}\n",
      t.dir / "src", "attached");
  json run;
  REQUIRE(test::eventually(
      [&] {
        auto got = t.server.try_run(id);
        if (!got) return false;
        run = *got;
        return run["status"] == "Completed" || run["status"] == "Failed";
      },
      60s));
  INFO(run.dump());
  CHECK(run["status"] == "Completed");
  CHECK(run["node_id"] == node_id);
  CHECK(t.server.log(id, "user_logs/std_log.txt") == "hello from the attached node\n");

  // Attached again to the same compute: repaired in place, the same node.
  auto again = t.attach_as_root("attached");
  INFO(again.err);
  REQUIRE(again.exit_code == 0);
  auto repaired = json::parse(again.out);
  CHECK(repaired["node_id"] == node_id);
  CHECK(repaired["previous_version"] == "amlnode 0.1.0");
  // To another compute: refused, as a second attachment would break the first.
  auto other = t.attach_as_root("other-cluster");
  CHECK(other.exit_code == 1);
  CHECK_THAT(other.err,
             Catch::Contains("attach: attached: 127.0.0.1 is attached to compute attached"));

  // The node removed at the control plane (an operator's DELETE): attach again brings the host
  // back as a new node, its old identity replaced.
  auto [deleted, answer] = t.server.user_call("DELETE", "/v1/nodes/" + node_id);
  REQUIRE(deleted == 200);
  auto revived = t.attach_as_root("attached");
  INFO(revived.err);
  REQUIRE(revived.exit_code == 0);
  node_id = json::parse(revived.out)["node_id"];
  CHECK(node_id != first_node);
  CHECK(t.node_listed(node_id));

  // Detached: the node drained and removed, the agent stopped and gone; its state kept but for
  // its identity (which went with the node).
  pid_t agent = std::stoi(test::slurp("/run/amlnode/agent.pid"));
  auto wrong_compute = t.detach("other-cluster", false);
  CHECK(wrong_compute.exit_code == 1);
  CHECK_THAT(wrong_compute.err, Catch::Contains("detach: attached: 127.0.0.1 is attached to "
                                                "compute attached of the control plane"));
  auto detached = t.detach("attached", false);
  INFO(detached.err);
  REQUIRE(detached.exit_code == 0);
  CHECK(json::parse(detached.out)["node_id"] == node_id);
  CHECK_FALSE(t.node_listed(node_id));
  CHECK(::kill(agent, 0) != 0);
  CHECK_FALSE(fs::exists("/usr/local/bin/amlnode", ec));
  CHECK_FALSE(fs::exists("/etc/amlnode/attached.json", ec));
  CHECK(fs::exists("/var/lib/amlnode/runs", ec));
  CHECK_FALSE(fs::exists("/var/lib/amlnode/agent.db", ec));
  // Attached again after that: a new node; then detached with --purge, nothing is left.
  auto fresh = t.attach_as_root("attached");
  INFO(fresh.err);
  REQUIRE(fresh.exit_code == 0);
  std::string second = json::parse(fresh.out)["node_id"];
  CHECK(second != node_id);
  CHECK(second != first_node);
  CHECK(t.node_listed(second));
  auto purged = t.detach("attached", true);
  INFO(purged.err);
  REQUIRE(purged.exit_code == 0);
  CHECK_FALSE(t.node_listed(second));
  CHECK_FALSE(fs::exists("/var/lib/amlnode", ec));
  CHECK_FALSE(fs::exists("/etc/amlnode", ec));
  CHECK_FALSE(fs::exists("/run/amlnode", ec));
  CHECK(test::run_command({"id", "amlnode"}).exit_code != 0);
}
