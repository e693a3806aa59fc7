#pragma once

// A stand-in for systemd's notification socket: a real AF_UNIX datagram socket bound where
// $NOTIFY_SOCKET will point, collecting what the agent sends (the sd_notify wire format: one
// datagram of newline-separated KEY=VALUE lines per message).

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace amlnode::test {

class NotifySocket {
 public:
  // `address` is a file system path or "@name" for the abstract namespace.
  explicit NotifySocket(std::string address);
  ~NotifySocket();
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  // The value for $NOTIFY_SOCKET.
  const std::string& address() const { return address_; }
  // An unused abstract name, unique to this process and call.
  static std::string unique_abstract_name();

  // The next datagram, or nullopt when none arrives within `timeout`.
  std::optional<std::string> receive(std::chrono::milliseconds timeout);
  // Receives until a message containing `line` (a whole line, e.g. "READY=1") arrives; returns it,
  // or nullopt after `timeout`. Every message received is kept in messages().
  std::optional<std::string> wait_for(const std::string& line, std::chrono::milliseconds timeout);
  // Everything received so far, oldest first.
  const std::vector<std::string>& messages() const { return messages_; }
  // Receives, without waiting, whatever is already queued (kept in messages()).
  void drain();

 private:
  std::string address_;
  int fd_ = -1;
  std::vector<std::string> messages_;
};

// Whether `message` has `line` as one of its lines.
bool has_line(const std::string& message, const std::string& line);
// The value of KEY= in `message`, or "" when it has none.
std::string value_of(const std::string& message, const std::string& key);

}  // namespace amlnode::test
