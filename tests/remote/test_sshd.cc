#include "tests/remote/test_sshd.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "common/hash.h"
#include "tests/support/process.h"

namespace amlnode::test {
namespace fs = std::filesystem;

namespace {

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

void must(const std::vector<std::string>& argv, const std::string& input = "") {
  auto result =
      input.empty()
          ? run_command(argv)
          : run_command({"/bin/sh", "-c", "printf '%s\\n' \"$1\" | \"$0\"", argv.front(), input});
  INFO(argv.front() << ": " << result.out << result.err);
  REQUIRE(result.exit_code == 0);
}

}  // namespace

bool TestSshd::can_run() {
  std::error_code ec;
  return ::geteuid() == 0 && fs::exists("/usr/sbin/sshd", ec) &&
         fs::exists("/usr/sbin/useradd", ec);
}

bool TestSshd::usable_here() {
  if (can_run()) return true;
  WARN("skipped: needs root, sshd (openssh-server) and useradd");
  return false;
}

TestSshd::TestSshd(bool allow_root)
    : user_("amlssh" + random_hex(4)), password_("pw-" + random_hex(8)) {
  // A failed step must not leave the user or an sshd behind: the destructor does not run.
  try {
    set_up(allow_root);
  } catch (...) {
    stop();
    run_command({"userdel", user_});
    throw;
  }
}

void TestSshd::set_up(bool allow_root) {
  // The user reads its home and authorized keys below the temporary folder (made 0700).
  fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::group_read |
                                   fs::perms::group_exec | fs::perms::others_read |
                                   fs::perms::others_exec);
  fs::create_directories(home() / ".ssh");
  must({"useradd", "-M", "-d", home().string(), "-s", "/bin/sh", user_});
  must({"chpasswd"}, user_ + ":" + password_);
  must({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", (dir_ / "host_key").string()});
  must({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key().string()});
  must({"ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-f",
        key_with_passphrase().string()});
  dir_.write("home/.ssh/authorized_keys",
             slurp(dir_ / "user_key.pub") + slurp(dir_ / "user_key_pass.pub"));
  must({"chown", "-R", user_, home().string()});
  port_ = free_port();
  fs::create_directories("/run/sshd");  // sshd's privilege separation folder
  dir_.write("sshd_config",
             "Port " + std::to_string(port_) + "\nListenAddress 127.0.0.1\nHostKey " +
                 (dir_ / "host_key").string() + "\nPidFile " + (dir_ / "sshd.pid").string() +
                 "\nAuthorizedKeysFile " + (home() / ".ssh/authorized_keys").string() +
                 "\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n"
                 "UsePAM no\nStrictModes no\nPermitUserEnvironment yes\n"
                 "PermitRootLogin " +
                 (allow_root ? "prohibit-password" : "no") + "\nAllowUsers " + user_ +
                 (allow_root ? " root" : "") + "\nSubsystem sftp internal-sftp\nLogLevel ERROR\n");
  start();
}

TestSshd::~TestSshd() {
  stop();
  run_command({"userdel", user_});
}

void TestSshd::start() {
  pid_ = start_command({"/usr/sbin/sshd", "-D", "-e", "-f", (dir_ / "sshd_config").string()},
                       dir_ / "sshd.out", dir_ / "sshd.err");
  REQUIRE(eventually(
      [&] {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address.sin_port = htons(static_cast<std::uint16_t>(port_));
        bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
        ::close(fd);
        return up;
      },
      std::chrono::seconds(10)));
}

void TestSshd::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  wait_command(pid_, std::chrono::seconds(10));
  pid_ = -1;
}

void TestSshd::replace_host_key() {
  stop();
  fs::remove(dir_ / "host_key");
  fs::remove(dir_ / "host_key.pub");
  must({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", (dir_ / "host_key").string()});
  start();
}

std::string TestSshd::host_fingerprint() const {
  auto listed = run_command({"ssh-keygen", "-l", "-f", (dir_ / "host_key.pub").string()});
  // "256 SHA256:... comment (ED25519)"
  auto begin = listed.out.find("SHA256:");
  return listed.out.substr(begin, listed.out.find(' ', begin) - begin);
}

void TestSshd::set_user_environment(const std::string& name, const std::string& value) {
  std::ofstream(home() / ".ssh/environment", std::ios::app) << name << "=" << value << "\n";
}

}  // namespace amlnode::test
