#pragma once

// The daemon's settings, read from the node config file's `control_plane` and `node` sections:
//
//   control_plane:
//     url: http://127.0.0.1:8631          # required
//     registration_token: "..."           # or registration_token_file (only the first start
//     registration_token_file: /etc/amlnode/registration_token   # needs it)
//     ca_file: /etc/amlnode/ca.pem        # https only; the system trust store when unset
//     tls_verify: true
//   node:
//     labels: {compute_name: cpu-cluster, vm_size: STANDARD_D2_V2, vm_priority: dedicated}
//     ssh_port: 22
//     address: 10.0.0.4                   # what other nodes reach this one on (runs across
//                                         # nodes); unset: the address the control plane is
//                                         # reached from, else its interfaces' first
//     run_concurrency: 1                  # runs held at once
//     lease_wait_seconds: 20              # long-poll length
//     min_free_bytes: 536870912           # less free space in state_dir: unusable

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "agent/config.h"
#include "agent/daemon/http_client.h"
#include "common/result.h"
#include "metrics/http_endpoint.h"

namespace amlnode::agent {

// The `metrics` section (docs/metrics.md):
//   metrics:
//     interval_seconds: 10        # node and run samples (1 to 3600)
//     listen: 127.0.0.1:9108      # /metrics; "" turns the endpoint off
//     allow_public: false         # a non-loopback listen address is refused without it
struct MetricsSettings {
  std::chrono::seconds interval{10};
  std::optional<metrics::ListenAddress> listen = metrics::ListenAddress{"127.0.0.1", 9108, true};
};

// Azure's Scheduled Events (docs/compute.md, "Preemption"): where a low-priority VM learns of its
// eviction. On for a node labelled vm_priority: lowpriority, or one whose config gives
// node.scheduled_events.url.
struct ScheduledEventsSettings {
  bool enabled = false;
  std::string url = "http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01";
  std::chrono::seconds interval{1};
  // The VM's name as IMDS gives it (compute/name), which a Preempt event's Resources must list:
  // node.scheduled_events.vm_name, else the host name.
  std::string vm_name;
};

struct AgentSettings {
  HttpEndpoint endpoint;
  HttpTlsOptions tls;
  std::optional<std::string> registration_token;
  std::optional<std::filesystem::path> registration_token_file;
  std::map<std::string, std::string> labels;
  int ssh_port = 22;
  // The IPv4 or IPv6 address the node's peers in a run across nodes reach it on; registered as its
  // first address. "" : the interfaces' own.
  std::string address;
  int run_concurrency = 1;
  // node.ephemeral (`amlnode agent --ephemeral`): the node takes one run, then leaves for good
  // (drains, is removed from the control plane, and the agent exits 0).
  bool ephemeral = false;
  ScheduledEventsSettings scheduled_events;
  // node.expected_gpus: how many GPUs NVML must list for the node to be usable; unset: the
  // NVIDIA device nodes present (/dev/nvidia<N>).
  std::optional<unsigned> expected_gpus;
  std::chrono::seconds lease_wait{20};
  // Below this much free space in the state dir the node reports `unusable` and takes no runs.
  std::uint64_t min_free_bytes = 512ull << 20;
  MetricsSettings metrics;
};

// Errors name the file and the key ("InvalidConfig").
Result<AgentSettings> read_agent_settings(const NodeConfig& config);

// The registration token: given inline, else read from its file (trailing whitespace dropped).
Result<std::string> registration_token(const AgentSettings& settings);

}  // namespace amlnode::agent
