#pragma once

// GET /v1/runs/{id}/metrics: a run's metrics, read from the two streams the node ships with its
// logs (docs/metrics.md): system_logs/metrics.jsonl, what the script logged through amlnode_run,
// and system_logs/resources.jsonl, the agent's resource samples of the run.
//
// Bounds: only the last 4 MiB of metrics.jsonl are read (the answer says "truncated": true when the
// stream is longer; the whole stream stays readable at .../logs/system_logs/metrics.jsonl), each
// name keeps its last 1000 values, at most 1000 names are shown, and only the last line of
// resources.jsonl (in its last 64 KiB) is read.

#include <nlohmann/json.hpp>
#include <string>

#include "controlplane/log_streams.h"

namespace amlnode::controlplane {

inline constexpr std::size_t kMetricsReadBytes = 4u << 20;
// Earlier attempts of a run queued again whose metrics are read before the current attempt's.
inline constexpr int kMaxMetricAttempts = 8;
inline constexpr std::size_t kMaxValuesPerMetric = 1000;
inline constexpr std::size_t kMaxMetricNames = 1000;
// Child runs (run.create_children) whose records are kept apart; records of more are dropped.
inline constexpr std::size_t kMaxChildRuns = 100;

// {"metrics": {NAME: {"kind", "count", "last", "values": [...]}}, "children": {CHILD_RUN_ID:
//  {NAME: ...}} (records a script logged on child runs it made), "truncated": bool,
//  "resources": {...the last sample...} or null}. Lines that are not records (not a JSON object,
// no string "name", a "kind" that is not a string) are skipped and counted in "skipped_lines", so
// a script writing to the file by hand cannot break the answer.
nlohmann::json run_metrics_json(const LogStreams& logs, const std::string& run_id);

}  // namespace amlnode::controlplane
