#pragma once

// Azure ML's run statuses and the rule that moves between them. Shared by the agent, the local
// run and the control plane, so all of them refuse the same impossible transitions.

#include <optional>
#include <string>
#include <string_view>

namespace amlnode::spec {

enum class RunStatus {
  NotStarted,
  Queued,
  Preparing,
  Running,
  Finalizing,
  CancelRequested,
  NotResponding,
  Completed,
  Failed,
  Canceled,
};

inline const char* to_string(RunStatus status) {
  switch (status) {
    case RunStatus::NotStarted:
      return "NotStarted";
    case RunStatus::Queued:
      return "Queued";
    case RunStatus::Preparing:
      return "Preparing";
    case RunStatus::Running:
      return "Running";
    case RunStatus::Finalizing:
      return "Finalizing";
    case RunStatus::CancelRequested:
      return "CancelRequested";
    case RunStatus::NotResponding:
      return "NotResponding";
    case RunStatus::Completed:
      return "Completed";
    case RunStatus::Failed:
      return "Failed";
    case RunStatus::Canceled:
      return "Canceled";
  }
  return "Unknown";
}

inline std::optional<RunStatus> run_status_from_string(std::string_view text) {
  for (int i = 0; i <= static_cast<int>(RunStatus::Canceled); ++i) {
    auto status = static_cast<RunStatus>(i);
    if (text == to_string(status)) return status;
  }
  return std::nullopt;
}

inline bool is_terminal(RunStatus status) {
  return status == RunStatus::Completed || status == RunStatus::Failed ||
         status == RunStatus::Canceled;
}

// Transitions are monotone: the life-cycle phases only move forward, CancelRequested and
// NotResponding can interrupt any live phase, and nothing leaves a terminal status. After a cancel
// was requested only a terminal status may follow, so a canceled run never shows Running again.
// NotResponding (a lost heartbeat) may return to the phase the run was in when the node is back,
// which the caller expresses by moving to a phase at or after the one it had.
inline bool can_transition(RunStatus from, RunStatus to) {
  if (is_terminal(from)) return false;
  if (is_terminal(to)) return true;
  if (from == RunStatus::CancelRequested) return false;
  if (to == RunStatus::CancelRequested || to == RunStatus::NotResponding) return from != to;
  if (from == RunStatus::NotResponding) return true;
  return static_cast<int>(to) > static_cast<int>(from);
}

}  // namespace amlnode::spec
