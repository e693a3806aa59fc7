#include "remote/ssh_session.h"

#include <fcntl.h>
#include <libssh2.h>
#include <libssh2_sftp.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <vector>

#include "common/hash.h"

namespace amlnode::remote {
namespace {

Error error(const char* code, std::string message) {
  return Error{code, std::move(message)};
}

std::string key_type_name(int type) {
  switch (type) {
    case LIBSSH2_HOSTKEY_TYPE_RSA:
      return "ssh-rsa";
    case LIBSSH2_HOSTKEY_TYPE_DSS:
      return "ssh-dss";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256:
      return "ecdsa-sha2-nistp256";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384:
      return "ecdsa-sha2-nistp384";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521:
      return "ecdsa-sha2-nistp521";
    case LIBSSH2_HOSTKEY_TYPE_ED25519:
      return "ssh-ed25519";
    default:
      return "unknown";
  }
}

// The known_hosts key-type bits of a host key type.
int known_host_key_bits(int type) {
  switch (type) {
    case LIBSSH2_HOSTKEY_TYPE_RSA:
      return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
    case LIBSSH2_HOSTKEY_TYPE_DSS:
      return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256:
      return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384:
      return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521:
      return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
    case LIBSSH2_HOSTKEY_TYPE_ED25519:
      return LIBSSH2_KNOWNHOST_KEY_ED25519;
    default:
      return LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
  }
}

// A TCP connection to host:port within `timeout`, blocking afterwards.
Result<int> connect_tcp(const std::string& host, int port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0)
    return error(kConnectFailed, "resolving " + host + ": " + ::gai_strerror(rc));
  std::string why = "no address";
  for (addrinfo* at = found; at; at = at->ai_next) {
    int fd = ::socket(at->ai_family, at->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    if (::connect(fd, at->ai_addr, at->ai_addrlen) != 0 && errno != EINPROGRESS) {
      why = std::strerror(errno);
      ::close(fd);
      continue;
    }
    pollfd wait{fd, POLLOUT, 0};
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (::poll(&wait, 1, static_cast<int>(timeout.count())) != 1 ||
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
      why = soerr ? std::strerror(soerr) : "timed out";
      ::close(fd);
      continue;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    ::freeaddrinfo(found);
    return fd;
  }
  ::freeaddrinfo(found);
  return error(kConnectFailed, "connecting to " + host + ":" + std::to_string(port) + ": " + why);
}

class Libssh2Session final : public SshSession {
 public:
  Libssh2Session(std::string host, int port, int fd, LIBSSH2_SESSION* session,
                 std::chrono::milliseconds timeout)
      : host_(std::move(host)), port_(port), fd_(fd), session_(session), timeout_(timeout) {}
  ~Libssh2Session() override {
    if (sftp_) libssh2_sftp_shutdown(sftp_);
    libssh2_session_disconnect(session_, "amlnode: done");
    libssh2_session_free(session_);
    ::close(fd_);
  }

  Result<void> start(std::chrono::milliseconds timeout) {
    libssh2_session_set_blocking(session_, 1);
    libssh2_session_set_timeout(session_, static_cast<long>(timeout.count()));
    if (libssh2_session_handshake(session_, fd_) != 0)
      return error(kConnectFailed, "the SSH handshake with " + host_ + " failed: " + last_error());
    std::size_t length = 0;
    int type = 0;
    const char* key = libssh2_session_hostkey(session_, &length, &type);
    if (!key) return error(kConnectFailed, "the host sent no host key");
    key_type_ = type;
    host_key_ = HostKey{key_type_name(type), std::string(key, length),
                        ssh_fingerprint(std::string_view(key, length))};
    return ok();
  }

  const HostKey& host_key() const override { return host_key_; }

  Result<bool> verify_host_key(const HostKeyPolicy& policy) override {
    LIBSSH2_KNOWNHOSTS* hosts = libssh2_knownhost_init(session_);
    if (!hosts) return error(kConnectFailed, "libssh2 could not make a known-hosts list");
    std::error_code ec;
    if (std::filesystem::exists(policy.known_hosts, ec) &&
        libssh2_knownhost_readfile(hosts, policy.known_hosts.c_str(),
                                   LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0) {
      libssh2_knownhost_free(hosts);
      return error(kConnectFailed, "reading " + policy.known_hosts.string() + ": " + last_error());
    }
    libssh2_knownhost* entry = nullptr;
    // The name exactly as recorded ("[host]:port" off port 22, so another port's sshd on the same
    // host is another host), and the key's type: a key of another type recorded for the host is
    // not this one's, and says nothing about it.
    std::string name = host_name();
    int check = libssh2_knownhost_checkp(
        hosts, name.c_str(), -1, host_key_.raw.data(), host_key_.raw.size(),
        LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
            known_host_key_bits(key_type_),
        &entry);
    Result<bool> outcome = false;
    if (check == LIBSSH2_KNOWNHOST_CHECK_MATCH) {
      outcome = false;
    } else if (check == LIBSSH2_KNOWNHOST_CHECK_MISMATCH) {
      outcome = error(kHostKeyChanged,
                      "THE HOST KEY OF " + host_name() + " HAS CHANGED: it now presents " +
                          host_key_.type + " " + host_key_.fingerprint + ", unlike the key " +
                          policy.known_hosts.string() +
                          " holds for it. Someone may be intercepting the connection, or the host "
                          "was reinstalled; nothing was sent. If the change is expected, remove "
                          "its line from that file and attach again.");
    } else if (check == LIBSSH2_KNOWNHOST_CHECK_NOTFOUND) {
      bool given = policy.fingerprint && *policy.fingerprint == host_key_.fingerprint;
      if (policy.fingerprint && !given) {
        outcome = error(kHostKeyUnknown, host_name() + " presents " + host_key_.type + " " +
                                             host_key_.fingerprint + ", not the " +
                                             *policy.fingerprint + " --host-key names");
      } else if (!given && !policy.accept_new) {
        outcome = error(kHostKeyUnknown,
                        host_name() + " is not in " + policy.known_hosts.string() +
                            "; its key is " + host_key_.type + " " + host_key_.fingerprint +
                            ". Check it (ssh-keygen -lf on the host's key) and give --host-key " +
                            host_key_.fingerprint + ", or --accept-new-host-key");
      } else {
        outcome = record(hosts, policy.known_hosts);
      }
    } else {
      outcome = error(kConnectFailed, "checking the host key failed: " + last_error());
    }
    libssh2_knownhost_free(hosts);
    return outcome;
  }

  Result<void> authenticate(const Credentials& credentials) override {
    int rc = -1;
    std::string how;
    if (credentials.private_key) {
      how = "the key " + credentials.private_key->string();
      rc = libssh2_userauth_publickey_fromfile(
          session_, credentials.username.c_str(), nullptr, credentials.private_key->c_str(),
          credentials.passphrase ? credentials.passphrase->c_str() : nullptr);
    } else if (credentials.password) {
      how = "a password";
      rc = libssh2_userauth_password(session_, credentials.username.c_str(),
                                     credentials.password->c_str());
    } else {
      return error(kAuthenticationFailed, "no password and no private key to log in with");
    }
    if (rc != 0)
      return error(kAuthenticationFailed, "logging in to " + host_name() + " as " +
                                              credentials.username + " with " + how +
                                              " failed: " + last_error());
    return ok();
  }

  Result<CommandResult> run(const std::string& command, const std::string& input,
                            std::size_t max_output, std::chrono::seconds timeout) override {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    // Every libssh2 call waits at most what is left of the command's time.
    auto left = [&] {
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      libssh2_session_set_timeout(session_, std::max<long>(1, static_cast<long>(ms.count())));
      return ms.count() > 0;
    };
    auto failed = [&](const std::string& what) {
      return error(kCommandFailed, what + " (" + command.substr(0, 60) + "...): " + last_error());
    };
    left();
    LIBSSH2_CHANNEL* channel = libssh2_channel_open_session(session_);
    if (!channel) return failed("opening a channel failed");
    // stderr comes with stdout, in the order written: one stream to read, none to block on.
    libssh2_channel_handle_extended_data2(channel, LIBSSH2_CHANNEL_EXTENDED_DATA_MERGE);
    Result<CommandResult> outcome = exec(channel, command, input, max_output, left, failed);
    libssh2_session_set_timeout(session_, static_cast<long>(timeout_.count()));
    libssh2_channel_free(channel);
    return outcome;
  }

  template <class Left, class Failed>
  Result<CommandResult> exec(LIBSSH2_CHANNEL* channel, const std::string& command,
                             const std::string& input, std::size_t max_output, Left& left,
                             Failed& failed) {
    CommandResult result;
    if (libssh2_channel_exec(channel, command.c_str()) != 0)
      return failed("starting a command failed");
    std::size_t at = 0;
    while (at < input.size()) {
      if (!left()) return failed("the command's input could not be sent in time");
      auto n = libssh2_channel_write(channel, input.data() + at, input.size() - at);
      if (n < 0) return failed("sending the command's input failed");
      at += static_cast<std::size_t>(n);
    }
    libssh2_channel_send_eof(channel);
    char buffer[16384];
    for (;;) {
      if (!left()) return failed("the command did not finish in time");
      auto n = libssh2_channel_read(channel, buffer, sizeof buffer);
      if (n == 0) break;
      if (n < 0) return failed("reading the command's output failed");
      std::size_t room = max_output - std::min(max_output, result.output.size());
      result.output.append(buffer, std::min(room, static_cast<std::size_t>(n)));
      result.cut = result.cut || static_cast<std::size_t>(n) > room;
    }
    left();
    if (libssh2_channel_close(channel) != 0 || libssh2_channel_wait_closed(channel) != 0)
      return failed("the command's channel did not close");
    char* signal = nullptr;
    std::size_t signal_length = 0;
    libssh2_channel_get_exit_signal(channel, &signal, &signal_length, nullptr, nullptr, nullptr,
                                    nullptr);
    if (signal) {
      std::string name(signal, signal_length);
      libssh2_free(session_, signal);
      return error(kCommandFailed, "the command was killed by SIG" + name);
    }
    result.exit_code = libssh2_channel_get_exit_status(channel);
    return result;
  }

  Result<void> write_file(const std::string& remote_path, std::string_view data,
                          int mode) override {
    auto handle = open_for_writing(remote_path, mode);
    if (!handle.ok()) return handle.error();
    auto written = write_all(*handle, data, remote_path);
    return close(*handle, remote_path, std::move(written));
  }

  Result<void> upload(const std::filesystem::path& local, const std::string& remote_path,
                      int mode) override {
    std::ifstream in(local, std::ios::binary);
    if (!in) return error(kTransferFailed, "cannot read " + local.string());
    auto handle = open_for_writing(remote_path, mode);
    if (!handle.ok()) return handle.error();
    std::vector<char> buffer(1 << 20);
    Result<void> outcome = ok();
    while (outcome.ok() && in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      auto got = static_cast<std::size_t>(in.gcount());
      if (got == 0) break;
      outcome = write_all(*handle, std::string_view(buffer.data(), got), remote_path);
    }
    return close(*handle, remote_path, std::move(outcome));
  }

 private:
  std::string host_name() const {
    return port_ == 22 ? host_ : "[" + host_ + "]:" + std::to_string(port_);
  }

  std::string last_error() const {
    char* message = nullptr;
    int length = 0;
    libssh2_session_last_error(session_, &message, &length, 0);
    return message ? std::string(message, static_cast<std::size_t>(length)) : "unknown error";
  }

  // Appends the host's key to known_hosts, as OpenSSH writes a line.
  Result<bool> record(LIBSSH2_KNOWNHOSTS* hosts, const std::filesystem::path& file) {
    libssh2_knownhost* added = nullptr;
    std::string name = host_name();
    if (libssh2_knownhost_addc(hosts, name.c_str(), nullptr, host_key_.raw.data(),
                               host_key_.raw.size(), nullptr, 0,
                               LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
                                   known_host_key_bits(key_type_),
                               &added) != 0)
      return error(kConnectFailed, "recording the host key failed: " + last_error());
    char line[8192];
    std::size_t length = 0;
    if (libssh2_knownhost_writeline(hosts, added, line, sizeof line, &length,
                                    LIBSSH2_KNOWNHOST_FILE_OPENSSH) != 0)
      return error(kConnectFailed, "recording the host key failed: " + last_error());
    std::error_code ec;
    std::filesystem::create_directories(file.parent_path(), ec);
    std::ofstream out(file, std::ios::app);
    out.write(line, static_cast<std::streamsize>(length));
    if (!out) return error(kConnectFailed, "appending to " + file.string() + " failed");
    return true;
  }

  Result<LIBSSH2_SFTP*> sftp() {
    if (!sftp_) sftp_ = libssh2_sftp_init(session_);
    if (!sftp_) return error(kTransferFailed, "starting SFTP failed: " + last_error());
    return sftp_;
  }

  Result<LIBSSH2_SFTP_HANDLE*> open_for_writing(const std::string& path, int mode) {
    auto channel = sftp();
    if (!channel.ok()) return channel.error();
    LIBSSH2_SFTP_HANDLE* handle = libssh2_sftp_open(
        *channel, path.c_str(), LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_TRUNC, mode);
    if (!handle)
      return error(kTransferFailed, "opening " + path + " on the host failed: " + last_error());
    // An existing file keeps its mode through O_TRUNC: set it, so 0600 means 0600.
    LIBSSH2_SFTP_ATTRIBUTES attributes{};
    attributes.flags = LIBSSH2_SFTP_ATTR_PERMISSIONS;
    attributes.permissions = static_cast<unsigned long>(mode);
    if (libssh2_sftp_fsetstat(handle, &attributes) != 0) {
      libssh2_sftp_close(handle);
      return error(kTransferFailed, "setting the mode of " + path + " failed: " + last_error());
    }
    return handle;
  }

  // Closes the file; a write is done only once its close succeeded.
  Result<void> close(LIBSSH2_SFTP_HANDLE* handle, const std::string& path, Result<void> written) {
    bool closed = libssh2_sftp_close(handle) == 0;
    if (!written.ok()) return written;
    if (!closed) return error(kTransferFailed, "closing " + path + " failed: " + last_error());
    return ok();
  }

  Result<void> write_all(LIBSSH2_SFTP_HANDLE* handle, std::string_view data,
                         const std::string& path) {
    while (!data.empty()) {
      auto n = libssh2_sftp_write(handle, data.data(), data.size());
      if (n < 0) return error(kTransferFailed, "writing " + path + " failed: " + last_error());
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return ok();
  }

  std::string host_;
  int port_;
  int fd_;
  LIBSSH2_SESSION* session_;
  std::chrono::milliseconds timeout_;
  LIBSSH2_SFTP* sftp_ = nullptr;
  int key_type_ = 0;
  HostKey host_key_;
};

}  // namespace

std::string ssh_fingerprint(std::string_view raw_key) {
  std::string digest = hex_decode(sha256_hex(raw_key));
  std::string encoded(4 * ((digest.size() + 2) / 3) + 1, '\0');
  int length = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(encoded.data()),
                               reinterpret_cast<const unsigned char*>(digest.data()),
                               static_cast<int>(digest.size()));
  encoded.resize(static_cast<std::size_t>(length));
  while (!encoded.empty() && encoded.back() == '=') encoded.pop_back();
  return "SHA256:" + encoded;
}

Result<std::unique_ptr<SshSession>> connect_ssh(const std::string& host, int port,
                                                std::chrono::milliseconds timeout) {
  static std::once_flag initialized;
  std::call_once(initialized, [] { libssh2_init(0); });
  auto fd = connect_tcp(host, port, timeout);
  if (!fd.ok()) return fd.error();
  LIBSSH2_SESSION* session = libssh2_session_init();
  if (!session) {
    ::close(*fd);
    return error(kConnectFailed, "libssh2 could not make a session");
  }
  auto ssh = std::make_unique<Libssh2Session>(host, port, *fd, session, timeout);
  if (auto started = ssh->start(timeout); !started.ok()) return started.error();
  return std::unique_ptr<SshSession>(std::move(ssh));
}

}  // namespace amlnode::remote
