#pragma once

// The scale hook (docs/compute.md, "Scaling"): creating and deleting a cluster's VMs is the
// cloud's, so the control plane runs the operator's command (`--scale-hook CMD`, under /bin/sh -c)
// whenever a cluster's target or its leaving nodes change, with what it decided as JSON on stdin:
//
//   {"compute": "cpu", "vm_size": "...", "vm_priority": "dedicated", "min_nodes": 0,
//    "max_nodes": 4, "current_node_count": 1, "target_node_count": 3,
//    "nodes_to_remove": [{"node_id": "...", "hostname": "...", "ips": [...]}]}
//
// Exit 0 is success; anything else (or running past the timeout, when it is killed with its
// process group) becomes the compute's `errors` in get_status(), naming the exit and the last
// line the hook wrote to stderr.

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

namespace amlnode::controlplane {

struct ScaleHookOutcome {
  bool ok = false;
  std::string message;  // what went wrong, for `errors`
};

// Blocking: runs on the hook's own worker thread. stdout is thrown away; at most 64 KiB of stderr
// is kept (its last line is quoted).
ScaleHookOutcome run_scale_hook(const std::string& command, const nlohmann::json& request,
                                std::chrono::seconds timeout);

}  // namespace amlnode::controlplane
