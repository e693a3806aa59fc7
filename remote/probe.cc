#include "remote/probe.h"

#include <charconv>
#include <sstream>

namespace amlnode::remote {

const std::string& probe_script() {
  // Each value on one line; os-release is read in a subshell so that nothing it sets leaks.
  // AMLNODE_OS_RELEASE, when the remote environment sets it, names another os-release file (the
  // tests point a test user's sessions at a fixture this way).
  static const std::string script = R"sh(
os_release=${AMLNODE_OS_RELEASE:-/etc/os-release}
field() { ( . "$os_release" 2>/dev/null; eval "printf '%s' \"\${$1}\"" ) | tr '\n' ' '; }
echo "os_id=$(field ID)"
echo "os_version=$(field VERSION_ID)"
echo "os_name=$(field PRETTY_NAME)"
echo "arch=$(uname -m)"
echo "uid=$(id -u)"
if [ "$(id -u)" != 0 ] && sudo -n true 2>/dev/null; then echo "sudo=yes"; else echo "sudo=no"; fi
place=/var/lib; [ -d "$place" ] || place=/
echo "free_kib=$(df -Pk "$place" 2>/dev/null | awk 'NR==2 {print $4}')"
echo "docker=$(command -v docker 2>/dev/null)"
echo "conda=$(command -v conda 2>/dev/null || command -v micromamba 2>/dev/null)"
if [ -d /run/systemd/system ]; then echo "systemd=yes"; else echo "systemd=no"; fi
echo "agent_version=$(/usr/local/bin/amlnode --version 2>/dev/null | head -n 1)"
echo "probe=done"
)sh";
  return script;
}

Result<HostFacts> parse_probe(const std::string& output) {
  HostFacts facts;
  bool done = false;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    auto equals = line.find('=');
    if (equals == std::string::npos) continue;
    std::string key = line.substr(0, equals);
    std::string value = line.substr(equals + 1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\r')) value.pop_back();
    if (key == "os_id") facts.os_id = value;
    if (key == "os_version") facts.os_version = value;
    if (key == "os_name") facts.os_name = value;
    if (key == "arch") facts.arch = value;
    if (key == "uid") facts.root = value == "0";
    if (key == "sudo") facts.passwordless_sudo = value == "yes";
    if (key == "free_kib") {
      std::int64_t kib = -1;
      if (std::from_chars(value.data(), value.data() + value.size(), kib).ec == std::errc() &&
          kib >= 0 && kib < (std::int64_t{1} << 50))
        facts.free_bytes = kib * 1024;
    }
    if (key == "docker") facts.docker = value;
    if (key == "conda") facts.conda = value;
    if (key == "systemd") facts.systemd = value == "yes";
    if (key == "agent_version") facts.agent_version = value;
    if (key == "probe") done = value == "done";
  }
  if (!done)
    return Error{kProbeRefused,
                 "the probe did not run to its end; it printed: " + output.substr(0, 2000)};
  return facts;
}

Result<void> check_host(const HostFacts& facts, const std::string& local_arch) {
  if (facts.os_id != "ubuntu" && facts.os_id != "debian")
    return Error{kProbeRefused,
                 "not Ubuntu or Debian: the host's os-release says " +
                     (facts.os_name.empty() ? "ID=" + facts.os_id : facts.os_name) +
                     " (Azure ML attaches Ubuntu VMs; amlnode runs on Ubuntu and Debian)"};
  if (facts.arch != local_arch)
    return Error{kProbeRefused,
                 "the host's CPU is " + facts.arch + ", this agent is built for " + local_arch};
  if (!facts.root && !facts.passwordless_sudo)
    return Error{kProbeRefused,
                 "no sudo: the user is not root and sudo asks for a password, so the agent "
                 "cannot be installed as a service"};
  if (facts.free_bytes >= 0 && facts.free_bytes < kMinFreeBytes)
    return Error{kProbeRefused, "disk full: " + std::to_string(facts.free_bytes >> 20) +
                                    " MiB free under /var/lib, the agent needs " +
                                    std::to_string(kMinFreeBytes >> 20) + " MiB"};
  return ok();
}

}  // namespace amlnode::remote
