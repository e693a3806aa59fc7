// remote/ssh_session.h against a real sshd on loopback (tests/remote/test_sshd.h): the host key
// verified before anything else, password and key logins, commands and SFTP.

#include "remote/ssh_session.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "remote/probe.h"
#include "tests/remote/test_sshd.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::unique_ptr<remote::SshSession> connect(const test::TestSshd& sshd) {
  auto session = remote::connect_ssh("127.0.0.1", sshd.port(), 10s);
  INFO((session.ok() ? "" : session.error().message));
  REQUIRE(session.ok());
  return std::move(*session);
}

remote::HostKeyPolicy policy(const test::TestSshd& sshd) {
  return {sshd.dir() / "known_hosts", std::nullopt, false};
}

}  // namespace

TEST_CASE("a host key is verified before anything is sent: unknown, given, recorded, changed",
          "[remote][ssh]") {
  if (!test::TestSshd::usable_here()) return;
  test::TestSshd sshd;
  auto session = connect(sshd);
  CHECK(session->host_key().type == "ssh-ed25519");
  CHECK(session->host_key().fingerprint == sshd.host_fingerprint());
  // Unknown: refused, naming the key to check.
  auto unknown = session->verify_host_key(policy(sshd));
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.error().code == remote::kHostKeyUnknown);
  CHECK_THAT(unknown.error().message, Catch::Contains(sshd.host_fingerprint()));
  // A --host-key that is not this key: refused; the right one: accepted and recorded.
  auto wrong = policy(sshd);
  wrong.fingerprint = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
  CHECK(session->verify_host_key(wrong).error().code == remote::kHostKeyUnknown);
  auto given = policy(sshd);
  given.fingerprint = sshd.host_fingerprint();
  auto recorded = session->verify_host_key(given);
  REQUIRE(recorded.ok());
  CHECK(*recorded);
  // Recorded as OpenSSH writes it, so ssh itself knows the host now.
  auto known = test::run_command({"ssh-keygen", "-F", "[127.0.0.1]:" + std::to_string(sshd.port()),
                                  "-f", (sshd.dir() / "known_hosts").string()});
  CHECK(known.exit_code == 0);
  // Known now: a new session matches without any flag.
  auto again = connect(sshd);
  auto matched = again->verify_host_key(policy(sshd));
  REQUIRE(matched.ok());
  CHECK_FALSE(*matched);
  // The host is "reinstalled": refused loudly, whatever the flags say.
  sshd.replace_host_key();
  auto changed = connect(sshd);
  auto accept_all = policy(sshd);
  accept_all.accept_new = true;
  auto refused = changed->verify_host_key(accept_all);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == remote::kHostKeyChanged);
  CHECK_THAT(refused.error().message, Catch::Contains("HAS CHANGED"));
  CHECK_THAT(refused.error().message, Catch::Contains(sshd.host_fingerprint()));
}

TEST_CASE("logins by password and by key with and without a passphrase, and wrong ones refused",
          "[remote][ssh]") {
  if (!test::TestSshd::usable_here()) return;
  test::TestSshd sshd;
  auto accept = policy(sshd);
  accept.accept_new = true;
  auto login = [&](const remote::Credentials& credentials) {
    auto session = connect(sshd);
    REQUIRE(session->verify_host_key(accept).ok());
    return session->authenticate(credentials);
  };
  CHECK(login({sshd.user(), sshd.password(), std::nullopt, std::nullopt}).ok());
  auto wrong = login({sshd.user(), std::string("not-it"), std::nullopt, std::nullopt});
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.error().code == remote::kAuthenticationFailed);
  CHECK_THAT(wrong.error().message, Catch::Contains("as " + sshd.user() + " with a password"));
  CHECK(login({sshd.user(), std::nullopt, sshd.key(), std::nullopt}).ok());
  CHECK(login({sshd.user(), std::nullopt, sshd.key_with_passphrase(), std::string("correct horse")})
            .ok());
  auto bad_passphrase =
      login({sshd.user(), std::nullopt, sshd.key_with_passphrase(), std::string("wrong")});
  REQUIRE_FALSE(bad_passphrase.ok());
  CHECK(bad_passphrase.error().code == remote::kAuthenticationFailed);
}

TEST_CASE("commands run with their exit code and output, files are written over SFTP",
          "[remote][ssh]") {
  if (!test::TestSshd::usable_here()) return;
  test::TestSshd sshd;
  auto session = connect(sshd);
  auto accept = policy(sshd);
  accept.accept_new = true;
  REQUIRE(session->verify_host_key(accept).ok());
  REQUIRE(session->authenticate({sshd.user(), sshd.password(), std::nullopt, std::nullopt}).ok());
  auto who = session->run("id -un; echo oops >&2; exit 3");
  REQUIRE(who.ok());
  CHECK(who->exit_code == 3);
  CHECK(who->output == sshd.user() + "\noops\n");
  auto fed = session->run("cat", "through stdin");
  REQUIRE(fed.ok());
  CHECK(fed->output == "through stdin");
  auto big = session->run("head -c 100000 /dev/zero", "", 1000);
  REQUIRE(big.ok());
  CHECK(big->output.size() == 1000);
  CHECK(big->cut);
  auto secret = (sshd.home() / "secret").string();
  REQUIRE(session->write_file(secret, "token-123", 0600).ok());
  CHECK(test::slurp(secret) == "token-123");
  struct stat info {};
  REQUIRE(::stat(secret.c_str(), &info) == 0);
  CHECK((info.st_mode & 0777) == 0600);
  // A file of several SFTP writes arrives whole.
  test::TempDir local;
  std::string data(3 << 20, 'x');
  auto file = local.write("big.bin", data);
  REQUIRE(session->upload(file, (sshd.home() / "big.bin").string(), 0755).ok());
  CHECK(test::slurp(sshd.home() / "big.bin") == data);
}

TEST_CASE("the probe reads the host: Debian here, no sudo for the test user, another OS refused",
          "[remote][ssh]") {
  if (!test::TestSshd::usable_here()) return;
  test::TestSshd sshd;
  auto probe = [&] {
    auto session = connect(sshd);
    auto accept = policy(sshd);
    accept.accept_new = true;
    REQUIRE(session->verify_host_key(accept).ok());
    REQUIRE(session->authenticate({sshd.user(), sshd.password(), std::nullopt, std::nullopt}).ok());
    auto ran = session->run("/bin/sh -s", remote::probe_script());
    REQUIRE(ran.ok());
    INFO(ran->output);
    auto facts = remote::parse_probe(ran->output);
    REQUIRE(facts.ok());
    return *facts;
  };
  auto facts = probe();
  CHECK(facts.os_id == "debian");
  CHECK(facts.arch == test::run_command({"uname", "-m"}).out.substr(0, facts.arch.size()));
  CHECK_FALSE(facts.root);
  CHECK(facts.free_bytes > 0);
  auto refused = remote::check_host(facts, facts.arch);
  if (!facts.passwordless_sudo) {
    REQUIRE_FALSE(refused.ok());
    CHECK_THAT(refused.error().message, Catch::StartsWith("no sudo"));
  }
  // The same host seen through a CentOS os-release (the test user's sessions point at it).
  auto fixture = sshd.dir().write("centos-os-release",
                                  "NAME=\"CentOS Linux\"\nID=\"centos\"\nVERSION_ID=\"7\"\n"
                                  "PRETTY_NAME=\"CentOS Linux 7 (Core)\"\n");
  sshd.set_user_environment("AMLNODE_OS_RELEASE", fixture.string());
  auto centos = probe();
  CHECK(centos.os_id == "centos");
  auto not_debian = remote::check_host(centos, centos.arch);
  REQUIRE_FALSE(not_debian.ok());
  CHECK(not_debian.error().message ==
        "not Ubuntu or Debian: the host's os-release says CentOS Linux 7 (Core) (Azure ML "
        "attaches Ubuntu VMs; amlnode runs on Ubuntu and Debian)");
}
