#pragma once

// `amlnode attach` (docs/attach.md): installs this agent on a host over SSH and registers it with
// the control plane as a node of a compute. Each step fails with an error naming it:
//   host key   verified against known_hosts before anything is sent (ssh_session.h)
//   login      password or key
//   probe      Ubuntu or Debian, this CPU architecture, root or password-less sudo, free disk
//   attached   a host attached to another compute is refused (a second attachment breaks the
//              first, as Azure ML warns); the same compute again upgrades or repairs in place
//   upload     the agent's binaries, Python module, unit and install script over SFTP, and its
//              config with a fresh single-use registration token (SFTP, mode 0600: the token
//              never crosses a shell)
//   install    systemd/install.sh as root
//   start      systemctl enable --now where systemd runs; otherwise the agent is started as the
//              service user in its own session, its pid in /var/lib/amlnode/agent.pid
//   register   waits until the control plane says the token was spent, and by which node
// The control plane is reached through AttachControlPlane, so this library needs no HTTP client.

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "remote/probe.h"
#include "remote/ssh_session.h"

namespace amlnode::remote {

inline constexpr const char* kAlreadyAttached = "AlreadyAttached";
inline constexpr const char* kRegistrationTimedOut = "RegistrationTimedOut";
inline constexpr const char* kNotAttached = "NotAttached";

struct AttachControlPlane {
  std::string url;      // what the node's config points at
  std::string ca_file;  // "" for the system's trust store
  // A fresh single-use registration token for the compute.
  std::function<Result<std::string>(const std::string& compute)> create_token;
  // The node that spent `token`, nullopt while unspent.
  std::function<Result<std::optional<std::string>>(const std::string& token)> node_of_token;
  // Whether the control plane still has the node (a node removed there cannot come back).
  std::function<Result<bool>(const std::string& node_id)> node_known;
};

// Where this agent's files are on this machine.
struct AgentFiles {
  std::filesystem::path bin_dir;      // amlnode, amlnode-shim, amlnode-parallel-node
  std::filesystem::path python_dir;   // share/amlnode/python
  std::filesystem::path systemd_dir;  // install.sh, amlnode.yml, amlnode.service
  std::string version;                // `amlnode --version`
};

struct AttachRequest {
  std::string host;
  int port = 22;
  Credentials credentials;
  HostKeyPolicy host_key;
  std::string compute;
  std::string kind = "remote";  // remote or hdinsight
  AgentFiles agent;
  std::string local_arch;
  std::chrono::seconds timeout{120};  // for the whole registration wait
};

struct AttachStep {
  std::string name;
  double seconds = 0;
};

struct AttachReport {
  std::string node_id;
  HostFacts facts;
  bool host_key_recorded = false;
  std::string previous_version;  // of an agent the host had, "" for a first attachment
  std::string started;           // how the agent was started, in words
  std::vector<AttachStep> steps;
};

Result<AttachReport> attach(const AttachRequest& request, const AttachControlPlane& control_plane);

// `amlnode detach` (docs/attach.md): drains the node, waits until it holds no run, stops and
// disables the agent, removes it (its state too with `purge`; without, the node's identity goes
// and its run folders and environment cache stay), and removes the node from the control plane.
// The host itself is left as it was, as the SDK's detach() leaves the VM.
struct DetachControlPlane {
  // Marks the node draining; false when the control plane has no such node (already removed).
  std::function<Result<bool>(const std::string& node_id)> drain;
  std::function<Result<bool>(const std::string& node_id)> holds_runs;
  std::function<Result<void>(const std::string& node_id)> remove_node;
};

struct DetachRequest {
  std::string host;
  int port = 22;
  Credentials credentials;
  HostKeyPolicy host_key;
  std::string compute;
  std::string control_plane_url;  // the control plane the host must be attached to
  std::string local_arch;
  bool purge = false;
  std::chrono::seconds timeout{600};  // for the node's runs to end
};

struct DetachReport {
  std::string node_id;
  std::vector<AttachStep> steps;
};

Result<DetachReport> detach(const DetachRequest& request, const DetachControlPlane& control_plane);

}  // namespace amlnode::remote
