#pragma once

// `amlnode agent`: the daemon's program edge. Opens the state store, builds the control plane
// client from the config, runs the Daemon on one io_context until it stops, and turns SIGTERM and
// SIGINT into a drain (the second one into an immediate stop).

#include <filesystem>

#include "agent/config.h"

namespace amlnode::agent {

// Exit codes: 0 after a drain or stop, 1 when the daemon could not go on, 2 for a bad config.
int run_agent(const NodeConfig& config, const std::filesystem::path& state_dir);

}  // namespace amlnode::agent
