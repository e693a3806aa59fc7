#pragma once

// What `amlnode attach` learns about a host before installing anything (docs/attach.md, "The
// probe"): one POSIX shell script sent on the remote shell's stdin (nothing on its command line),
// whose key=value lines are read back here, and the rules a host must meet: Ubuntu as Azure ML
// requires (Debian too), this agent's CPU architecture, root or password-less sudo, and room on
// disk. Docker and conda are reported, not required.

#include <cstdint>
#include <string>

#include "common/result.h"

namespace amlnode::remote {

inline constexpr const char* kProbeRefused = "HostNotSupported";

struct HostFacts {
  std::string os_id;  // os-release ID: ubuntu, debian, ...
  std::string os_version;
  std::string os_name;  // PRETTY_NAME
  std::string arch;     // uname -m
  bool root = false;
  bool passwordless_sudo = false;
  std::int64_t free_bytes = -1;  // under /var/lib (the agent's state) ; -1 when unknown
  std::string docker;            // where docker is, "" when absent
  std::string conda;             // where conda or micromamba is, "" when absent
  bool systemd = false;          // a running systemd (/run/systemd/system)
  std::string agent_version;     // `amlnode --version` of an installed agent, "" when none
};

// The script; its output is parse_probe's input.
const std::string& probe_script();
Result<HostFacts> parse_probe(const std::string& output);

// The bytes of free disk the agent needs on the host.
inline constexpr std::int64_t kMinFreeBytes = std::int64_t{1} << 30;

// Whether the host can take the agent; the error names what is missing.
Result<void> check_host(const HostFacts& facts, const std::string& local_arch);

}  // namespace amlnode::remote
