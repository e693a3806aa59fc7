#pragma once

// The daemon's own state, kept in SQLite at <state_dir>/agent.db (mode 0600: it holds the node
// token). Everything the daemon needs to carry on after SIGKILL lives here: the node identity now;
// runs held, log cursors and the status outbox as the daemon grows them.
//
// Writes are synchronous (WAL, synchronous=FULL): a call that returned has reached the disk. The
// daemon calls the store from its worker pool, never from the event loop thread, because a write
// can stall on a slow disk.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/daemon/control_plane_client.h"
#include "common/result.h"

namespace amlnode::agent {

// A run this node holds, as it must be remembered across a restart.
struct HeldRunRecord {
  LeasedRun lease;
  std::string status;  // the last status the node entered (Queued ... a terminal one)
  std::optional<int> shim_pid;
  std::optional<unsigned long long> shim_start_time;
};

// A status report waiting for the control plane's acknowledgement, in the order it was made.
struct OutboxEntry {
  std::int64_t seq = 0;
  StatusReport report;
};

class StateStore {
 public:
  virtual ~StateStore() = default;
  // The identity this node registered with, if it ever did.
  virtual Result<std::optional<NodeIdentity>> load_identity() = 0;
  // Stores the identity; a node has one, so this replaces any earlier one.
  virtual Result<void> save_identity(const NodeIdentity& identity) = 0;

  // Inserts or replaces a held run.
  virtual Result<void> save_run(const HeldRunRecord& run) = 0;
  virtual Result<std::vector<HeldRunRecord>> load_runs() = 0;
  // Forgets a run, its log cursors and its pending status reports.
  virtual Result<void> drop_run(const std::string& run_id) = 0;

  // Log cursors: how many bytes of each stream of a run the control plane has acknowledged.
  virtual Result<std::map<std::string, std::uint64_t>> log_cursors(const std::string& run_id) = 0;
  virtual Result<void> save_log_cursor(const std::string& run_id, const std::string& stream,
                                       std::uint64_t offset) = 0;

  // The status outbox: reports are kept until acknowledged, so none is lost to a restart of the
  // agent or an outage of the control plane. Bounded by the runs held: a run adds a handful.
  virtual Result<std::int64_t> enqueue_status(const StatusReport& report) = 0;
  virtual Result<std::vector<OutboxEntry>> pending_statuses() = 0;
  virtual Result<void> acknowledge_status(std::int64_t seq) = 0;
};

// Opens (creating when missing) <state_dir>/agent.db. Error code "StateStoreError".
Result<std::unique_ptr<StateStore>> open_sqlite_state_store(const std::filesystem::path& state_dir);

}  // namespace amlnode::agent
