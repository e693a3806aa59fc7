#include "tests/agent/daemon/notify_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <sstream>
#include <stdexcept>

namespace amlnode::test {

NotifySocket::NotifySocket(std::string address) : address_(std::move(address)) {
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  if (address_.size() >= sizeof(un.sun_path)) throw std::runtime_error("address too long");
  std::memcpy(un.sun_path, address_.data(), address_.size());
  bool abstract = address_[0] == '@';
  if (abstract) un.sun_path[0] = '\0';
  auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size() +
                                       (abstract ? 0 : 1));
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&un), length) != 0)
    throw std::runtime_error("cannot bind " + address_ + ": " + std::strerror(errno));
}

NotifySocket::~NotifySocket() {
  ::close(fd_);
  if (address_[0] == '/') ::unlink(address_.c_str());
}

std::string NotifySocket::unique_abstract_name() {
  static std::atomic<int> counter{0};
  return "@amlnode-test-notify-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

std::optional<std::string> NotifySocket::receive(std::chrono::milliseconds timeout) {
  pollfd ready{fd_, POLLIN, 0};
  if (::poll(&ready, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
  char buffer[8192];
  ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
  if (n < 0) return std::nullopt;
  messages_.emplace_back(buffer, static_cast<std::size_t>(n));
  return messages_.back();
}

std::optional<std::string> NotifySocket::wait_for(const std::string& line,
                                                  std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto message = receive(left);
    if (message && has_line(*message, line)) return message;
  }
}

void NotifySocket::drain() {
  while (receive(std::chrono::milliseconds(0))) {
  }
}

bool has_line(const std::string& message, const std::string& line) {
  std::istringstream lines(message);
  for (std::string each; std::getline(lines, each);) {
    if (each == line) return true;
  }
  return false;
}

std::string value_of(const std::string& message, const std::string& key) {
  std::istringstream lines(message);
  for (std::string each; std::getline(lines, each);) {
    if (each.rfind(key + "=", 0) == 0) return each.substr(key.size() + 1);
  }
  return "";
}

}  // namespace amlnode::test
