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
// Memory: one chunk buffer of at most kMaxLogChunk bytes per call.

#include <cstdint>
#include <filesystem>
#include <string>

#include "agent/daemon/control_plane_client.h"
#include "agent/daemon/state_store.h"

namespace amlnode::agent {

// Bytes per request: large enough to amortise a round trip, under the server's 8 MiB limit.
inline constexpr std::size_t kMaxLogChunk = 4 << 20;
// How far a stream's stored cursor may fall behind what the server acknowledged while a burst is
// being delivered: the most a crash of the agent makes it resend (the server skips those bytes).
inline constexpr std::uint64_t kCursorSaveBytes = 64 << 20;

struct ShipResult {
  bool caught_up = false;  // every stream was delivered up to the length its file had
};

// Delivers what the streams of the run in `run_dir` hold beyond their cursors. Blocking: runs on
// the worker pool. Errors: those of the client (Unreachable, StaleEpoch, ...) and StateStoreError.
Result<ShipResult> ship_run_logs(ControlPlaneClient& client, StateStore& store,
                                 const NodeIdentity& node, const std::string& run_id,
                                 std::int64_t epoch, const std::filesystem::path& run_dir);

}  // namespace amlnode::agent
