#pragma once

// Byte budgets for the log streams nodes append (docs/security.md): per stream, per run (its
// current attempt's streams together) and per node (the runs it holds now, together). A run can
// write as much as it likes on its own node; what the control plane keeps of it is bounded.
//
// An append is taken up to the room the three budgets leave; the next one is refused with
// `413 LogBudgetExceeded`, and the stream gets one marker line saying which budget it reached.
// The node then sets the stream aside and reports the bytes it did not deliver with the run's
// terminal status (the run record's `dropped_logs`), which adds a last marker with the count.
//
// Totals are kept in memory for the runs appended to since the server started, read from the
// stream files the first time; a run's total is forgotten when it ends or starts a new attempt.

#include <cstdint>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "controlplane/log_streams.h"
#include "controlplane/options.h"

namespace amlnode::controlplane {

class LogBudgets {
 public:
  LogBudgets(const LogStreams& logs, LogBudgetLimits limits) : logs_(logs), limits_(limits) {}

  struct Room {
    std::uint64_t bytes = 0;  // new bytes the stream may still take
    const char* budget = "";  // the budget that leaves the least: "stream", "run" or "node"
    std::uint64_t limit = 0;  // that budget's size
  };
  // The room left for `run_id`'s stream of `stream_length` bytes, whose node holds `node_runs`.
  Room room(const std::string& run_id, std::uint64_t stream_length,
            const std::vector<std::string>& node_runs);
  // `bytes` new bytes were appended to one of the run's streams.
  void appended(const std::string& run_id, std::uint64_t bytes);
  // True the first time it is asked for a stream: the caller writes the stream's marker.
  bool first_refusal(const std::string& run_id, const std::string& stream);
  // The run ended or starts a new attempt: its total is read again when next needed.
  void forget(const std::string& run_id);

  const LogBudgetLimits& limits() const { return limits_; }

 private:
  std::uint64_t run_bytes(const std::string& run_id);

  const LogStreams& logs_;
  LogBudgetLimits limits_;
  std::unordered_map<std::string, std::uint64_t> run_bytes_;
  std::set<std::pair<std::string, std::string>> refused_;
};

}  // namespace amlnode::controlplane
