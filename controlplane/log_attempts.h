#pragma once

// Attempts: a run requeued to another node (a new epoch after its node was lost) starts its
// process again, and the new node's log streams start again at byte 0. The streams the server
// holds from the earlier attempt are therefore set aside when such a run is leased again, and the
// new attempt's streams start empty:
//
//   runs/<run_id>/logs/                    the current attempt's streams (what readers get)
//   runs/<run_id>/attempts/<n>/logs/       attempt n (1, 2, ...), kept readable with ?attempt=n
//
// The current attempt's number is one more than the number of attempts set aside. An epoch that
// wrote no log bytes (a lease whose answer never reached its node, say) is not an attempt.

#include <filesystem>

#include "common/result.h"

namespace amlnode::controlplane {

// How many earlier attempts of the run in `run_dir` are set aside.
int archived_attempts(const std::filesystem::path& run_dir);

// Sets the current streams of `run_dir` aside as the next archived attempt, when there are any.
// The rename is made durable (both folders fsynced) before this returns, so a lease committed
// afterwards can never meet the old attempt's bytes again. Returns whether anything was moved.
// Error code "StorageError".
Result<bool> archive_attempt(const std::filesystem::path& run_dir);

// The folder LogStreams reads attempt `n` from: LogStreams(attempts_root(run_dir)) with run id
// std::to_string(n) names runs/<run_id>/attempts/<n>/logs/.
std::filesystem::path attempts_root(const std::filesystem::path& run_dir);

}  // namespace amlnode::controlplane
