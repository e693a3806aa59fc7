#pragma once

// Log delivery for one run: every stream under the run folder is appended to the control plane
// by byte offset, from a cursor persisted in the state store, so nothing is sent twice or lost
// across restarts of either side (docs/protocol.md, PUT /v1/runs/{id}/logs/{stream}).
//
// Streams: user_logs/std_log.txt (and std_log_process_N.txt), system_logs/<path>, and the run's
// ./logs as logs/<path>. A cursor moves only to a length the server answered, so a chunk whose
// answer was lost is resent and the server skips what it already has. The cursor is stored once
// a stream is caught up, and every kCursorSaveBytes during a long burst.
//
// The job owns the files, and nothing it does to them is passed over in silence:
// - Files are opened below the run folder without following a link (common/fs.h, open_beneath).
// - A hole (a sparse region, `truncate -s 200G`) is not read: the stream gets a marker line
//   saying how many bytes of holes were left out, and the count is the stream's dropped bytes.
// - A file cut shorter than what was read, rewritten in place (its last bytes read no longer
//   match), or replaced by another file at the same path is read again from its start, after a
//   marker line saying which of these happened.
// - A stream the control plane refuses for good (a name it cannot take, its byte budget spent)
//   is set aside: a line in system_logs/lifecycle.txt says why, nothing more of it is sent, and
//   the rest of the file counts as dropped.
// The run's dropped bytes per stream (ShipResult::dropped) go with its terminal status, into the
// control plane's run record.
//
// Memory: one chunk buffer of at most kMaxLogChunk bytes per call.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include "agent/daemon/control_plane_client.h"
#include "agent/daemon/state_store.h"

namespace amlnode::agent {

// Bytes per request: large enough to amortise a round trip, under the server's 8 MiB limit.
inline constexpr std::size_t kMaxLogChunk = 4 << 20;
// How far a stream's stored cursor may fall behind what the server acknowledged while a burst is
// being delivered: the most a crash of the agent makes it resend (the server skips those bytes).
inline constexpr std::uint64_t kCursorSaveBytes = 64 << 20;

// Bytes of a stream's file that did not reach the control plane, and why.
struct DroppedBytes {
  std::uint64_t bytes = 0;
  std::string why;  // "holes", or the control plane's refusal
};

struct ShipResult {
  bool caught_up = false;  // every stream was delivered up to the length its file had
  // Every stream with dropped bytes so far, by stream name.
  std::map<std::string, DroppedBytes> dropped;
};

// Delivers what the streams of the run in `run_dir` hold beyond their cursors. Blocking: runs on
// the worker pool. Errors: those of the client (Unreachable, StaleEpoch, ...) and StateStoreError;
// a refusal of one stream is not an error (the stream is set aside). `note` gets each line meant
// for the run's system_logs/lifecycle.txt (a stream set aside).
//
// `share_rank` is this node's rank in a run across nodes (-1: a run of one node). Every share
// delivers to the same run, so its streams are named apart: a share's one process logs
// user_logs/std_log_process_<node rank>.txt (its rank in the run), ranks' own logs are numbered
// by their global rank already, and the system logs and logs/ of every share but the master's go
// under system_logs/node_NN/ and logs/node_NN/.
//
// A Batch task's run (executors/batch_task.h) ships its task's stdout.txt and stderr.txt as
// user_logs/stdout.txt and user_logs/stderr.txt, and its logs/ from the task's wd/; `batch_root`
// is the node's Batch root they are found under.
Result<ShipResult> ship_run_logs(ControlPlaneClient& client, StateStore& store,
                                 const NodeIdentity& node, const std::string& run_id,
                                 std::int64_t epoch, const std::filesystem::path& run_dir,
                                 const std::function<void(const std::string&)>& note = {},
                                 int share_rank = -1, const std::filesystem::path& batch_root = {});

}  // namespace amlnode::agent
