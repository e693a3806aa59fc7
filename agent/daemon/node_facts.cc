#include "agent/daemon/node_facts.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <thread>

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

int nvidia_gpus() {
  static const std::regex device("nvidia[0-9]+");
  int count = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/dev", ec)) {
    if (std::regex_match(entry.path().filename().string(), device)) ++count;
  }
  return count;
}

}  // namespace

NodeFacts collect_node_facts(const std::map<std::string, std::string>& labels, int ssh_port) {
  NodeFacts facts;
  facts.hostname = host_name();
  facts.ips = addresses();
  facts.ssh_port = ssh_port;
  facts.cpus = static_cast<int>(std::thread::hardware_concurrency());
  facts.memory_bytes = memory_bytes();
  facts.gpus = nvidia_gpus();
  facts.labels = labels;
  facts.agent_version = AMLNODE_VERSION;
  return facts;
}

}  // namespace amlnode::agent
