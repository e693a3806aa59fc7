#pragma once

// The config.yml of an agent under test, written the same way by every test that starts one.

#include <filesystem>
#include <string>
#include <utility>

namespace amlnode::test {

// The parts of an agent's config that tests vary.
struct AgentConfigSections {
  // More keys of the control_plane section, each line indented ("  ca_file: ...\n").
  std::string control_plane;
  // The body of the node section, each line indented.
  std::string node = "  labels: {compute_name: cpu-cluster}\n  lease_wait_seconds: 2\n";
  // The metrics section as a flow mapping. Port 0: each agent serves /metrics on a port of its
  // own, so agents of one test or of tests run in parallel never contend for the default 9108.
  std::string metrics = "{listen: '127.0.0.1:0'}";
  // Appended: sections of their own (environments:, docker:, log:).
  std::string extra;

  AgentConfigSections& with_control_plane(std::string keys) {
    control_plane = std::move(keys);
    return *this;
  }
  AgentConfigSections& with_node(std::string body) {
    node = std::move(body);
    return *this;
  }
  AgentConfigSections& with_metrics(std::string mapping) {
    metrics = std::move(mapping);
    return *this;
  }
  AgentConfigSections& with_extra(std::string sections) {
    extra = std::move(sections);
    return *this;
  }
};

inline std::string agent_config_text(const std::filesystem::path& state_dir, const std::string& url,
                                     const std::string& token,
                                     const AgentConfigSections& sections = {}) {
  return "state_dir: " + state_dir.string() + "\ncontrol_plane:\n  url: " + url +
         "\n  registration_token: " + token + "\n" + sections.control_plane + "node:\n" +
         sections.node + "metrics: " + sections.metrics + "\n" + sections.extra;
}

}  // namespace amlnode::test
