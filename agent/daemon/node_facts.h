#pragma once

// What the node is, as the registration call tells the control plane: read from the running
// system (hostname, addresses, CPUs, memory, GPUs) plus what the config says (labels, SSH port).

#include "agent/daemon/control_plane_client.h"

namespace amlnode::agent {

// Facts of this machine. Labels and the SSH port come from the caller; GPUs are the NVIDIA device
// nodes present (/dev/nvidia<N>), so a node without the driver reports none.
NodeFacts collect_node_facts(const std::map<std::string, std::string>& labels, int ssh_port);

// The address this machine sends from to reach host:port (the kernel's route to it, no packet
// sent): what peers on the control plane's network reach it on. "" when it cannot be learnt or
// is a loopback address (a control plane on this machine says nothing about the peers).
std::string route_address_to(const std::string& host, const std::string& port);

// Puts `address` first among the facts' addresses (the one registered as the node's address,
// which runs across nodes give their peers); nothing when it is "".
void put_address_first(NodeFacts& facts, const std::string& address);

}  // namespace amlnode::agent
