#pragma once

// A real sshd (openssh-server, Debian's) on loopback for the tests of remote/: its own host key,
// config and port, and a test user of its own (made with useradd, removed afterwards) with a
// password and an authorized key. Needs root (sshd switches to the user; useradd); the tests say
// so and stop when they are not root.

#include <sys/types.h>

#include <filesystem>
#include <string>

#include "tests/support/temp_dir.h"

namespace amlnode::test {

class TestSshd {
 public:
  // `allow_root`: root may log in too, with the same keys (what attach tests use to install).
  explicit TestSshd(bool allow_root = false);
  ~TestSshd();

  static bool can_run();  // root, with sshd and useradd present
  // can_run(), and when not, a warning in the test's output that it did nothing (skipped).
  static bool usable_here();
  void start();  // (again) with the current host key
  void stop();
  // A new host key: the host "was reinstalled" (or someone is in the middle).
  void replace_host_key();

  int port() const { return port_; }
  const std::string& user() const { return user_; }
  const std::string& password() const { return password_; }
  std::filesystem::path home() const { return dir_ / "home"; }
  // A key pair the user's authorized_keys accepts; the passphrase one needs "correct horse".
  std::filesystem::path key() const { return dir_ / "user_key"; }
  std::filesystem::path key_with_passphrase() const { return dir_ / "user_key_pass"; }
  // The host key's fingerprint as ssh-keygen -l prints it.
  std::string host_fingerprint() const;
  // Sets a variable in every session of the user (~/.ssh/environment, PermitUserEnvironment).
  void set_user_environment(const std::string& name, const std::string& value);
  const TempDir& dir() const { return dir_; }

 private:
  void set_up(bool allow_root);

  TempDir dir_;
  std::string user_;
  std::string password_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace amlnode::test
