#pragma once

// What the node is, as the registration call tells the control plane: read from the running
// system (hostname, addresses, CPUs, memory, GPUs) plus what the config says (labels, SSH port).

#include "agent/daemon/control_plane_client.h"

namespace amlnode::agent {

// Facts of this machine. Labels and the SSH port come from the caller; GPUs are the NVIDIA device
// nodes present (/dev/nvidia<N>), so a node without the driver reports none.
NodeFacts collect_node_facts(const std::map<std::string, std::string>& labels, int ssh_port);

}  // namespace amlnode::agent
