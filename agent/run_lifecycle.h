#pragma once

// The life of one run on this node as a pure state machine: the driver says what happened, the
// machine answers with the status to enter and the actions to take. No I/O, no threads and no
// clock of its own (the driver passes the time), so `amlnode run` (agent/local_run.cc) and the
// daemon (agent/daemon/daemon.cc) follow the same rules, and the rules are tested without
// processes or sleeps (tests/agent/run_lifecycle_test.cc), as the control plane's Cluster is.
//
//   Queued --start--> Preparing --prepared--> Launching --launched--> Running
//   Running --process_ended--> Finalizing --finalized--> Completed | Failed | Canceled
//   Preparing / Launching --preparation_failed--> Failed
//   cancel: CancelRequested; a running process is told to stop (Stop), one that is not gone
//           within its grace period and the stop margin is killed (Kill, on tick); a run not yet
//           started is concluded Canceled once its preparation returns, and never launched.
//
// Statuses only move as spec::can_transition allows, so a canceled run never shows Running or
// Finalizing again and a terminal status never changes.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "spec/run_status.h"

namespace amlnode::agent {

// How a run ended: its terminal status, the error (code and message) when it did not complete,
// and the exit code `amlnode run` exits with (-1: the process never ran).
struct RunOutcome {
  spec::RunStatus status = spec::RunStatus::Failed;
  std::optional<Error> error;
  int exit_code = 0;
};

// What the driver must do after a transition, in this order.
enum class RunAction {
  Prepare,   // build what the run needs: snapshot, inputs, environment or image
  Launch,    // start the run's processes (under their shim) or its container
  Stop,      // ask the running processes to stop: SIGTERM, the grace period, SIGKILL
  Kill,      // the stop has not ended them in time: end every process of the run now
  Finalize,  // read how the processes ended, release what the run held
  Conclude,  // record the terminal status (Transition::outcome)
};
const char* to_string(RunAction action);

enum class RunPhase { Queued, Preparing, Launching, Running, Finalizing, Ended };
const char* to_string(RunPhase phase);

class RunLifecycle {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  struct Transition {
    std::optional<spec::RunStatus> entered;  // the status the run moved to, if it moved
    std::vector<RunAction> actions;
    std::optional<RunOutcome> outcome;  // with Conclude
  };

  // `stop_timeout`: how long a stop may take before the run's processes are killed outright (the
  // run's grace period plus a margin for the supervisor's own SIGKILL to land).
  explicit RunLifecycle(std::chrono::milliseconds stop_timeout);

  // A run the daemon held before it restarted, in the status it had recorded. A run that was
  // Running (or CancelRequested) is Running again; Queued or Preparing start over from Queued.
  static RunLifecycle resumed(spec::RunStatus status, std::chrono::milliseconds stop_timeout);

  Transition start(TimePoint now);
  Transition prepared(TimePoint now);
  Transition preparation_failed(const Error& error, TimePoint now);
  Transition launched(TimePoint now);
  Transition cancel(TimePoint now);
  Transition process_ended(TimePoint now);
  Transition finalized(const RunOutcome& outcome, TimePoint now);
  // Time passing: a stop that is overdue becomes a Kill.
  Transition tick(TimePoint now);
  // The run ended outside the path above (its process could not be found again after a restart,
  // its supervisor failed): concluded with `outcome` from whatever live phase it was in.
  Transition end(const RunOutcome& outcome);

  // When tick() next has something to decide; unset when nothing waits on time.
  std::optional<TimePoint> next_deadline() const;

  spec::RunStatus status() const { return status_; }
  RunPhase phase() const { return phase_; }
  bool cancel_requested() const { return cancel_requested_; }
  // Whether the run holds a slot of the node: from its lease until its processes are gone.
  bool holds_slot() const { return phase_ != RunPhase::Finalizing && phase_ != RunPhase::Ended; }

  // The outcome of a run canceled before its processes started.
  static RunOutcome canceled_before_start();

 private:
  bool enter(spec::RunStatus status, Transition& transition);
  Transition conclude(const RunOutcome& outcome);

  std::chrono::milliseconds stop_timeout_;
  RunPhase phase_ = RunPhase::Queued;
  spec::RunStatus status_ = spec::RunStatus::Queued;
  bool cancel_requested_ = false;
  std::optional<TimePoint> stop_sent_at_;
  bool killed_ = false;
};

}  // namespace amlnode::agent
