#include "agent/daemon/node_facts.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include <thread>

#include "agent/run_steps.h"

namespace amlnode::agent {

namespace {

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return name;
}

// Non-loopback IPv4 addresses first (the private address AmlCompute lists), then IPv6 ones.
std::vector<std::string> addresses() {
  std::vector<std::string> v4;
  std::vector<std::string> v6;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return {};
  for (ifaddrs* entry = list; entry; entry = entry->ifa_next) {
    if (!entry->ifa_addr || (entry->ifa_flags & IFF_LOOPBACK) || !(entry->ifa_flags & IFF_UP))
      continue;
    char text[INET6_ADDRSTRLEN] = {};
    if (entry->ifa_addr->sa_family == AF_INET) {
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(entry->ifa_addr)->sin_addr, text,
                  sizeof(text));
      v4.emplace_back(text);
    } else if (entry->ifa_addr->sa_family == AF_INET6) {
      auto* address = reinterpret_cast<sockaddr_in6*>(entry->ifa_addr);
      if (IN6_IS_ADDR_LINKLOCAL(&address->sin6_addr)) continue;
      ::inet_ntop(AF_INET6, &address->sin6_addr, text, sizeof(text));
      v6.emplace_back(text);
    }
  }
  ::freeifaddrs(list);
  v4.insert(v4.end(), v6.begin(), v6.end());
  return v4;
}

std::uint64_t memory_bytes() {
  long pages = ::sysconf(_SC_PHYS_PAGES);
  long page_size = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page_size > 0 ? static_cast<std::uint64_t>(pages) * page_size : 0;
}

}  // namespace

NodeFacts collect_node_facts(const std::map<std::string, std::string>& labels, int ssh_port) {
  NodeFacts facts;
  facts.hostname = host_name();
  facts.ips = addresses();
  facts.ssh_port = ssh_port;
  facts.cpus = static_cast<int>(std::thread::hardware_concurrency());
  facts.memory_bytes = memory_bytes();
  facts.gpus = nvidia_gpu_count();
  facts.labels = labels;
  facts.agent_version = AMLNODE_VERSION;
  return facts;
}

std::string route_address_to(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) return "";
  std::string out;
  for (addrinfo* at = found; at && out.empty(); at = at->ai_next) {
    int fd = ::socket(at->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t length = sizeof local;
    // A datagram socket's connect only picks the route; nothing goes on the wire.
    if (::connect(fd, at->ai_addr, at->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0) {
      char text[INET6_ADDRSTRLEN] = {};
      if (local.ss_family == AF_INET) {
        auto* v4 = reinterpret_cast<sockaddr_in*>(&local);
        if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127)
          out = ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text) ? text : "";
      } else if (local.ss_family == AF_INET6) {
        auto* v6 = reinterpret_cast<sockaddr_in6*>(&local);
        if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr) && !IN6_IS_ADDR_LINKLOCAL(&v6->sin6_addr))
          out = ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text) ? text : "";
      }
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return out;
}

void put_address_first(NodeFacts& facts, const std::string& address) {
  if (address.empty()) return;
  std::erase(facts.ips, address);
  facts.ips.insert(facts.ips.begin(), address);
}

}  // namespace amlnode::agent
