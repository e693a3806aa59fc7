#pragma once

// The daemon's own state, kept in SQLite at <state_dir>/agent.db (mode 0600: it holds the node
// token). Everything the daemon needs to carry on after SIGKILL lives here: the node identity now;
// runs held, log cursors and the status outbox as the daemon grows them.
//
// Writes are synchronous (WAL, synchronous=FULL): a call that returned has reached the disk. The
// daemon calls the store from its worker pool, never from the event loop thread, because a write
// can stall on a slow disk.

#include <filesystem>
#include <memory>
#include <optional>

#include "agent/daemon/control_plane_client.h"
#include "common/result.h"

namespace amlnode::agent {

class StateStore {
 public:
  virtual ~StateStore() = default;
  // The identity this node registered with, if it ever did.
  virtual Result<std::optional<NodeIdentity>> load_identity() = 0;
  // Stores the identity; a node has one, so this replaces any earlier one.
  virtual Result<void> save_identity(const NodeIdentity& identity) = 0;
};

// Opens (creating when missing) <state_dir>/agent.db. Error code "StateStoreError".
Result<std::unique_ptr<StateStore>> open_sqlite_state_store(const std::filesystem::path& state_dir);

}  // namespace amlnode::agent
