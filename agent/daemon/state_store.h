#pragma once

// The daemon's own state, kept in SQLite at <state_dir>/agent.db (mode 0600: it holds the node
// token). Everything the daemon needs to carry on after SIGKILL lives here: the node identity now;
// runs held, log cursors and the status outbox as the daemon grows them.
//
// Writes are synchronous (WAL, synchronous=FULL): a call that returned has reached the disk,
// except the four marked "not synced" below, whose commits survive a crash of the agent at once
// but reach the disk only with the next synced write (a power cut may undo them, harmlessly). A
// run's status goes through save_run and then enqueue_status, so one fsync covers both. The
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
  // Set (durably) just before the run's shim is started, and never cleared while the run is held:
  // a restarted agent that finds it, and neither a stored pid nor the shim, must not start the
  // process again.
  bool launching = false;
  std::optional<std::string> container_id = std::nullopt;  // Docker runs, once created
};

// A status report waiting for the control plane's acknowledgement, in the order it was made.
struct OutboxEntry {
  std::int64_t seq = 0;
  StatusReport report;
};

// Where the delivery of one log stream stands. The file and the stream differ where the agent
// put a marker line in (a truncated or replaced file) or left bytes out (a hole, or everything
// after the control plane refused the stream for good): see log_shipper.h.
struct LogCursor {
  std::uint64_t server = 0;   // the stream's length on the control plane, as last answered
  std::uint64_t file = 0;     // how far the file has been read
  std::uint64_t inode = 0;    // the file read so far (0: none yet)
  std::string tail;           // the file's last bytes before `file` (at most kLogTailBytes)
  std::string set_aside;      // why the control plane refused the stream for good ("": it did not)
  std::uint64_t dropped = 0;  // bytes of the file not delivered (holes; all after a set-aside)
  // The lease epoch it was delivered under (0: a store written before epochs were kept). A run
  // leased here again starts a new attempt at the control plane and a new file: a cursor of an
  // earlier epoch, saved by a delivery that ended after the run was forgotten, counts as none.
  std::int64_t epoch = 0;

  bool operator==(const LogCursor&) const = default;
};
inline constexpr std::size_t kLogTailBytes = 32;

class StateStore {
 public:
  virtual ~StateStore() = default;
  // The identity this node registered with, if it ever did.
  virtual Result<std::optional<NodeIdentity>> load_identity() = 0;
  // Stores the identity; a node has one, so this replaces any earlier one.
  virtual Result<void> save_identity(const NodeIdentity& identity) = 0;
  // The node's registration key: made (64 random hex digits) and stored on the first call, the
  // same on every later one. It is stored before the node registers, so a registration whose
  // answer was lost can be repeated with it (docs/protocol.md).
  virtual Result<std::string> registration_key() = 0;

  // Inserts or updates a held run; its `launching` mark is left as it is (see mark_launching).
  // Not synced: the daemon follows it with enqueue_status, whose fsync makes both durable.
  virtual Result<void> save_run(const HeldRunRecord& run) = 0;
  // Sets the run's `launching` mark, inserting the run (with the given record) if it is not
  // stored yet. Called from the thread that starts the shim, so it may overtake the save_run of
  // the run's first status; neither write undoes the other.
  virtual Result<void> mark_launching(const HeldRunRecord& run) = 0;
  virtual Result<std::vector<HeldRunRecord>> load_runs() = 0;
  // The container of a Docker run, stored as soon as it is created (save_run leaves it alone).
  virtual Result<void> save_container_id(const std::string& run_id,
                                         const std::string& container_id) = 0;
  // Forgets a run, its container id, its log cursors and its pending status reports. Not synced:
  // a run dropped once its terminal status was acknowledged, if a power cut brings it back, is
  // named in the next heartbeat and stopped (dropped again) by the control plane's answer.
  virtual Result<void> drop_run(const std::string& run_id) = 0;

  // Log cursors: where the delivery of each stream of a run stands (LogCursor). Not synced unless
  // asked: a cursor behind the control plane's length only makes the node resend bytes the server
  // skips. A cursor saved just after a marker or a set-aside is synced, since those must not be
  // decided twice (log_shipper.h).
  virtual Result<std::map<std::string, LogCursor>> log_cursors(const std::string& run_id) = 0;
  virtual Result<void> save_log_cursor(const std::string& run_id, const std::string& stream,
                                       const LogCursor& cursor, bool synced = false) = 0;

  // The status outbox: reports are kept until acknowledged, so none is lost to a restart of the
  // agent or an outage of the control plane. Bounded by the runs held: a run adds a handful.
  virtual Result<std::int64_t> enqueue_status(const StatusReport& report) = 0;
  virtual Result<std::vector<OutboxEntry>> pending_statuses() = 0;
  // Not synced: an acknowledged status sent again is acknowledged again (status is idempotent).
  virtual Result<void> acknowledge_status(std::int64_t seq) = 0;
};

// Opens (creating when missing) <state_dir>/agent.db. Error code "StateStoreError".
Result<std::unique_ptr<StateStore>> open_sqlite_state_store(const std::filesystem::path& state_dir);

}  // namespace amlnode::agent
