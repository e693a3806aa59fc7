#pragma once

// An SSH connection to a machine a user brings (docs/attach.md), over libssh2: the host key
// verified against known_hosts before anything is sent, password or key authentication, commands
// run with their output bounded, and files written over SFTP (so no secret ever crosses a remote
// shell's command line or history). One session is used by one thread; calls block, each within
// the session's timeout.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "common/result.h"

namespace amlnode::remote {

// Error codes, each naming the step that failed (docs/attach.md lists what each means).
inline constexpr const char* kConnectFailed = "ConnectFailed";
inline constexpr const char* kHostKeyUnknown = "HostKeyUnknown";
inline constexpr const char* kHostKeyChanged = "HostKeyChanged";
inline constexpr const char* kAuthenticationFailed = "AuthenticationFailed";
inline constexpr const char* kCommandFailed = "CommandFailed";
inline constexpr const char* kTransferFailed = "TransferFailed";

struct HostKey {
  std::string type;         // as OpenSSH names it: ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa, ...
  std::string raw;          // the key blob
  std::string fingerprint;  // "SHA256:<base64 without padding>", as ssh-keygen -l prints it
};

// How an unknown host key is treated: refused unless it is the fingerprint the user gave, or the
// user accepts a new key (then it is recorded in known_hosts). A changed key is always refused.
struct HostKeyPolicy {
  std::filesystem::path known_hosts;       // read, and appended to when a new key is accepted
  std::optional<std::string> fingerprint;  // --host-key SHA256:...
  bool accept_new = false;                 // --accept-new-host-key
};

struct Credentials {
  std::string username;
  std::optional<std::string> password;
  std::optional<std::filesystem::path> private_key;
  std::optional<std::string> passphrase;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together, at most the limit given (the rest dropped)
  bool cut = false;    // whether output was longer than the limit
};

class SshSession {
 public:
  virtual ~SshSession() = default;
  virtual const HostKey& host_key() const = 0;
  // Verifies the host key under `policy` (the first thing after connecting). Returns whether the
  // key was new and recorded.
  virtual Result<bool> verify_host_key(const HostKeyPolicy& policy) = 0;
  virtual Result<void> authenticate(const Credentials& credentials) = 0;
  // Runs `command` through the remote user's shell; `input` goes to its stdin. A command not done
  // within `timeout` (all of it, however it trickles), cut off, or killed by a signal is an error
  // (CommandFailed); only an exit status the host sent is an exit code.
  virtual Result<CommandResult> run(const std::string& command, const std::string& input = "",
                                    std::size_t max_output = 1 << 20,
                                    std::chrono::seconds timeout = std::chrono::seconds(60)) = 0;
  // Writes `data` to `remote_path` over SFTP with `mode`, replacing what is there.
  virtual Result<void> write_file(const std::string& remote_path, std::string_view data,
                                  int mode) = 0;
  // Copies a local file to `remote_path` over SFTP with `mode`.
  virtual Result<void> upload(const std::filesystem::path& local, const std::string& remote_path,
                              int mode) = 0;
};

// Connects and completes the SSH handshake; nothing is authenticated yet.
Result<std::unique_ptr<SshSession>> connect_ssh(const std::string& host, int port,
                                                std::chrono::milliseconds timeout);

// "SHA256:..." of a key blob, as OpenSSH prints it.
std::string ssh_fingerprint(std::string_view raw_key);

}  // namespace amlnode::remote
