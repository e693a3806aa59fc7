#include "agent/daemon/service_notifier.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace amlnode::agent {

namespace {

class SocketNotifier : public ServiceNotifier {
 public:
  SocketNotifier(int fd, sockaddr_un address, socklen_t length)
      : fd_(fd), address_(address), length_(length) {}
  ~SocketNotifier() override { ::close(fd_); }

  Result<void> notify(const std::string& message) override {
    std::string bounded = message.substr(0, kMaxNotifyMessage);
    ssize_t sent = ::sendto(fd_, bounded.data(), bounded.size(), MSG_NOSIGNAL,
                            reinterpret_cast<const sockaddr*>(&address_), length_);
    if (sent < 0) {
      return Error{"NotifyFailed",
                   std::string("cannot notify the service manager: ") + std::strerror(errno)};
    }
    return ok();
  }

 private:
  int fd_;
  sockaddr_un address_;
  socklen_t length_;
};

class NullNotifier : public ServiceNotifier {
 public:
  Result<void> notify(const std::string&) override { return ok(); }
};

Error invalid(const std::string& address, const std::string& why) {
  return Error{"InvalidNotifySocket", "NOTIFY_SOCKET=" + address + ": " + why};
}

// The address as sockaddr_un: a path as it is; "@name" as the abstract name "\0name", whose
// length is exactly its bytes (an abstract name is not NUL-terminated).
Result<std::pair<sockaddr_un, socklen_t>> parse_address(const std::string& address) {
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  if (address.empty() || (address[0] != '/' && address[0] != '@'))
    return invalid(address, "expected an absolute path or an abstract name starting with '@'");
  bool abstract = address[0] == '@';
  std::size_t limit = sizeof(un.sun_path) - (abstract ? 0 : 1);
  if (address.size() > limit)
    return invalid(address, "longer than a Unix socket address (" + std::to_string(limit) + ")");
  std::memcpy(un.sun_path, address.data(), address.size());
  if (abstract) un.sun_path[0] = '\0';
  auto length =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size() + (abstract ? 0 : 1));
  return std::make_pair(un, length);
}

std::optional<std::chrono::microseconds> parse_watchdog(const char* usec, const char* pid) {
  if (!usec || !*usec) return std::nullopt;
  if (pid && *pid) {
    char* end = nullptr;
    long owner = std::strtol(pid, &end, 10);
    // The interval is meant for another process (a wrapper that exec'd us, or our parent).
    if (*end != '\0' || owner != static_cast<long>(::getpid())) return std::nullopt;
  }
  char* end = nullptr;
  unsigned long long value = std::strtoull(usec, &end, 10);
  if (*end != '\0' || value == 0) {
    spdlog::warn("ignoring WATCHDOG_USEC={}: expected a positive number of microseconds", usec);
    return std::nullopt;
  }
  return std::chrono::microseconds(value);
}

std::string plural_runs(std::size_t runs) {
  return std::to_string(runs) + (runs == 1 ? " run" : " runs");
}

std::string monotonic_usec() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return std::to_string(static_cast<long long>(now.tv_sec) * 1000000 + now.tv_nsec / 1000);
}

}  // namespace

ServiceManagerEnv take_service_manager_env() {
  ServiceManagerEnv env;
  if (const char* socket = std::getenv("NOTIFY_SOCKET")) env.notify_socket = socket;
  env.watchdog = parse_watchdog(std::getenv("WATCHDOG_USEC"), std::getenv("WATCHDOG_PID"));
  for (const char* name : {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}) ::unsetenv(name);
  return env;
}

Result<std::unique_ptr<ServiceNotifier>> make_socket_notifier(const std::string& address) {
  auto parsed = parse_address(address);
  if (!parsed.ok()) return parsed.error();
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return invalid(address, std::string("cannot make a socket: ") + std::strerror(errno));
  return std::unique_ptr<ServiceNotifier>(
      std::make_unique<SocketNotifier>(fd, parsed->first, parsed->second));
}

std::unique_ptr<ServiceNotifier> make_null_notifier() {
  return std::make_unique<NullNotifier>();
}

std::string describe_node_state(const std::string& state, std::size_t runs,
                                const std::string& reason) {
  if (state == "unusable") return "unusable: " + reason;
  if (state == "idle") return runs == 0 ? "idle" : "idle (" + plural_runs(runs) + " finishing)";
  if (state == "leaving") return runs == 0 ? "leaving" : "leaving (" + plural_runs(runs) + " held)";
  return state + " " + plural_runs(runs);
}

ServiceReporter::ServiceReporter(std::shared_ptr<ServiceNotifier> notifier)
    : notifier_(std::move(notifier)) {}

void ServiceReporter::ready(const std::string& status) {
  ready_sent_ = true;
  last_status_ = status;
  send("READY=1\nSTATUS=" + status);
}

void ServiceReporter::status(const std::string& status) {
  if (status == last_status_) return;
  last_status_ = status;
  send("STATUS=" + status);
}

void ServiceReporter::reloading() {
  send("RELOADING=1\nMONOTONIC_USEC=" + monotonic_usec() + "\nSTATUS=reloading the config");
  last_status_ = "reloading the config";
}

void ServiceReporter::stopping(const std::string& status) {
  last_status_ = status;
  send("STOPPING=1\nSTATUS=" + status);
}

void ServiceReporter::send(const std::string& message) {
  auto sent = notifier_->notify(message);
  if (sent.ok() || failure_logged_) return;
  failure_logged_ = true;
  spdlog::warn("{} (further failures are not logged)", sent.error().message);
}

ServiceWatchdog::ServiceWatchdog(boost::asio::io_context& io,
                                 std::shared_ptr<ServiceNotifier> notifier,
                                 std::chrono::microseconds watchdog_interval)
    : timer_(io), notifier_(std::move(notifier)), ping_interval_(watchdog_interval / 2) {}

void ServiceWatchdog::start() {
  stopped_ = false;
  (void)notifier_->notify("WATCHDOG=1");
  schedule();
}

void ServiceWatchdog::stop() {
  stopped_ = true;
  timer_.cancel();
}

void ServiceWatchdog::schedule() {
  timer_.expires_after(ping_interval_);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    // A failed ping is not logged: the reporter logs the first failure of the channel, and a
    // ping every few seconds would flood the log.
    (void)notifier_->notify("WATCHDOG=1");
    schedule();
  });
}

}  // namespace amlnode::agent
