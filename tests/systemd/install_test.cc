// systemd/install.sh in a temporary root (--root): the service user, directories, config, unit
// and binaries; idempotency; uninstall keeping the state unless --purge.

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <iostream>
#include <sstream>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;

namespace {

const std::filesystem::path kSystemdDir = std::filesystem::path(AMLNODE_SOURCE_DIR) / "systemd";
const std::filesystem::path kBinDir = std::filesystem::path(AMLNODE_BINARY_DIR) / "bin";

// A root with the account files useradd needs, and a docker group.
void make_root(const test::TempDir& root) {
  root.write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
  root.write("etc/group", "root:x:0:\ndocker:x:998:\n");
  root.write("etc/shadow", "root:*:19000:0:99999:7:::\n");
  root.write("etc/gshadow", "root:*::\ndocker:!::\n");
}

test::CommandResult install(const test::TempDir& root, const std::vector<std::string>& flags) {
  std::vector<std::string> argv{(kSystemdDir / "install.sh").string(), "--root",
                                root.path().string(), "--from", kBinDir.string()};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return test::run_command(argv);
}

// The line of `name` in an account file (etc/passwd, etc/group), or "".
std::string account_line(const test::TempDir& root, const std::string& file,
                         const std::string& name) {
  std::istringstream lines(test::slurp(root / file));
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + ":", 0) == 0) return line;
  }
  return "";
}

struct stat stat_of(const std::filesystem::path& path) {
  struct stat info {};
  REQUIRE(::stat(path.c_str(), &info) == 0);
  return info;
}

bool can_manage_users() {
  if (::geteuid() != 0) {
    std::cout << "SKIPPED: install.sh creates users and sets owners: needs root\n";
    return false;
  }
  return true;
}

}  // namespace

TEST_CASE("install.sh installs the service into a root, idempotently", "[systemd][install]") {
  if (!can_manage_users()) return;
  test::TempDir root;
  make_root(root);
  auto first = install(root, {});
  INFO(first.out << first.err);
  REQUIRE(first.exit_code == 0);

  // A system user with no login, in the docker group, owning the state directory alone.
  std::string user = account_line(root, "etc/passwd", "amlnode");
  REQUIRE_FALSE(user.empty());
  CHECK(user.find(":/var/lib/amlnode:/usr/sbin/nologin") != std::string::npos);
  int uid = std::stoi(user.substr(user.find(":x:") + 3));
  CHECK(uid < 1000);
  CHECK(account_line(root, "etc/group", "docker") == "docker:x:998:amlnode");
  auto state = stat_of(root / "var/lib/amlnode");
  CHECK(static_cast<int>(state.st_uid) == uid);
  CHECK((state.st_mode & 07777) == 0750);

  // The commented default config, root's and readable by the service's group only.
  CHECK(test::slurp(root / "etc/amlnode/config.yml") == test::slurp(kSystemdDir / "amlnode.yml"));
  auto config = stat_of(root / "etc/amlnode/config.yml");
  CHECK(config.st_uid == 0);
  CHECK((config.st_mode & 07777) == 0640);

  // The unit, starting the binary where it was installed.
  std::string unit = test::slurp(root / "etc/systemd/system/amlnode.service");
  CHECK(unit.find("\nExecStart=/usr/local/bin/amlnode agent --config /etc/amlnode/config.yml\n") !=
        std::string::npos);
  for (const char* name :
       {"amlnode", "amlnode-shim", "amlnode-parallel-node", "amlnode-controlplane"}) {
    INFO(name);
    CHECK(test::slurp(root / "usr/local/bin" / name) == test::slurp(kBinDir / name));
    CHECK((stat_of(root / "usr/local/bin" / name).st_mode & 07777) == 0755);
  }

  SECTION("a second run changes nothing and keeps an edited config") {
    root.write("etc/amlnode/config.yml", "control_plane: {url: http://cp:8631}\n");
    std::string passwd = test::slurp(root / "etc/passwd");
    auto again = install(root, {});
    INFO(again.out << again.err);
    REQUIRE(again.exit_code == 0);
    CHECK(again.out.find("installed") == std::string::npos);
    CHECK(again.out.find("created") == std::string::npos);
    CHECK(again.out.find("kept the existing") != std::string::npos);
    CHECK(test::slurp(root / "etc/passwd") == passwd);
    CHECK(test::slurp(root / "etc/amlnode/config.yml") == "control_plane: {url: http://cp:8631}\n");
  }

  SECTION("uninstall removes the service and keeps the node's state and config") {
    root.write("var/lib/amlnode/agent.db", "the node's identity");
    auto removed = install(root, {"--uninstall"});
    INFO(removed.out << removed.err);
    REQUIRE(removed.exit_code == 0);
    CHECK_FALSE(std::filesystem::exists(root / "etc/systemd/system/amlnode.service"));
    CHECK_FALSE(std::filesystem::exists(root / "usr/local/bin/amlnode"));
    CHECK_FALSE(std::filesystem::exists(root / "usr/local/bin/amlnode-shim"));
    CHECK_FALSE(std::filesystem::exists(root / "usr/local/bin/amlnode-parallel-node"));
    CHECK(test::slurp(root / "var/lib/amlnode/agent.db") == "the node's identity");
    CHECK(std::filesystem::exists(root / "etc/amlnode/config.yml"));
    CHECK_FALSE(account_line(root, "etc/passwd", "amlnode").empty());

    // Reinstalling resumes as the same node.
    REQUIRE(install(root, {}).exit_code == 0);
    CHECK(test::slurp(root / "var/lib/amlnode/agent.db") == "the node's identity");

    SECTION("--purge removes the state, the config and the user too") {
      auto purged = install(root, {"--uninstall", "--purge"});
      INFO(purged.out << purged.err);
      REQUIRE(purged.exit_code == 0);
      CHECK_FALSE(std::filesystem::exists(root / "var/lib/amlnode"));
      CHECK_FALSE(std::filesystem::exists(root / "etc/amlnode"));
      CHECK(account_line(root, "etc/passwd", "amlnode").empty());
      CHECK(account_line(root, "etc/group", "amlnode").empty());
      CHECK(account_line(root, "etc/group", "docker") == "docker:x:998:");
    }
  }
}

TEST_CASE("install.sh refuses what it cannot do, saying why", "[systemd][install]") {
  test::TempDir root;
  make_root(root);
  auto missing = test::run_command({(kSystemdDir / "install.sh").string(), "--root",
                                    root.path().string(), "--from", (root / "nothing").string()});
  CHECK(missing.exit_code == 1);
  CHECK(missing.err.find("amlnode not found") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(root / "etc/amlnode"));

  auto bad = test::run_command({(kSystemdDir / "install.sh").string(), "--purge"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("--purge goes with --uninstall") != std::string::npos);

  auto unknown = test::run_command({(kSystemdDir / "install.sh").string(), "--frobnicate"});
  CHECK(unknown.exit_code == 2);
  CHECK(unknown.err.find("unknown option --frobnicate") != std::string::npos);
}
