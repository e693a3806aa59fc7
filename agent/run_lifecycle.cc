#include "agent/run_lifecycle.h"

#include "common/error_codes.h"

namespace amlnode::agent {

using spec::RunStatus;

const char* to_string(RunAction action) {
  switch (action) {
    case RunAction::Prepare:
      return "Prepare";
    case RunAction::Launch:
      return "Launch";
    case RunAction::Stop:
      return "Stop";
    case RunAction::Kill:
      return "Kill";
    case RunAction::Finalize:
      return "Finalize";
    case RunAction::Conclude:
      return "Conclude";
  }
  return "Unknown";
}

const char* to_string(RunPhase phase) {
  switch (phase) {
    case RunPhase::Queued:
      return "Queued";
    case RunPhase::Preparing:
      return "Preparing";
    case RunPhase::Launching:
      return "Launching";
    case RunPhase::Running:
      return "Running";
    case RunPhase::Finalizing:
      return "Finalizing";
    case RunPhase::Ended:
      return "Ended";
  }
  return "Unknown";
}

RunLifecycle::RunLifecycle(std::chrono::milliseconds stop_timeout) : stop_timeout_(stop_timeout) {}

RunLifecycle RunLifecycle::resumed(RunStatus status, std::chrono::milliseconds stop_timeout) {
  RunLifecycle lifecycle(stop_timeout);
  switch (status) {
    case RunStatus::Running:
    case RunStatus::NotResponding:
      lifecycle.phase_ = RunPhase::Running;
      lifecycle.status_ = RunStatus::Running;
      break;
    case RunStatus::CancelRequested:
      // The stop was sent before the restart; the supervisor carries it out without the agent.
      lifecycle.phase_ = RunPhase::Running;
      lifecycle.status_ = RunStatus::CancelRequested;
      lifecycle.cancel_requested_ = true;
      break;
    case RunStatus::Finalizing:
      lifecycle.phase_ = RunPhase::Finalizing;
      lifecycle.status_ = RunStatus::Finalizing;
      break;
    case RunStatus::Completed:
    case RunStatus::Failed:
    case RunStatus::Canceled:
      lifecycle.phase_ = RunPhase::Ended;
      lifecycle.status_ = status;
      break;
    case RunStatus::Queued:
    case RunStatus::Preparing:
      lifecycle.status_ = status;  // prepared afresh, from the Queued phase
      break;
    default:
      break;
  }
  return lifecycle;
}

RunOutcome RunLifecycle::canceled_before_start() {
  return {RunStatus::Canceled,
          Error{errors::kCanceled, "The run was canceled before its process started"}, -1};
}

bool RunLifecycle::enter(RunStatus status, Transition& transition) {
  if (!spec::can_transition(status_, status)) return false;
  status_ = status;
  transition.entered = status;
  return true;
}

RunLifecycle::Transition RunLifecycle::conclude(const RunOutcome& outcome) {
  Transition transition;
  phase_ = RunPhase::Ended;
  enter(outcome.status, transition);
  transition.actions.push_back(RunAction::Conclude);
  transition.outcome = outcome;
  return transition;
}

RunLifecycle::Transition RunLifecycle::start(TimePoint) {
  Transition transition;
  if (phase_ != RunPhase::Queued) return transition;
  phase_ = RunPhase::Preparing;
  enter(RunStatus::Preparing, transition);
  transition.actions.push_back(RunAction::Prepare);
  return transition;
}

RunLifecycle::Transition RunLifecycle::prepared(TimePoint) {
  if (phase_ != RunPhase::Preparing) return {};
  if (cancel_requested_) return conclude(canceled_before_start());
  phase_ = RunPhase::Launching;
  return {std::nullopt, {RunAction::Launch}, std::nullopt};
}

RunLifecycle::Transition RunLifecycle::preparation_failed(const Error& error, TimePoint) {
  if (phase_ != RunPhase::Preparing && phase_ != RunPhase::Launching) return {};
  // A preparation stopped by the cancel fails as it can; the cancel is what ended the run.
  if (cancel_requested_) return conclude(canceled_before_start());
  return conclude(RunOutcome{RunStatus::Failed, error, 125});
}

RunLifecycle::Transition RunLifecycle::launched(TimePoint now) {
  Transition transition;
  if (phase_ != RunPhase::Launching) return transition;
  phase_ = RunPhase::Running;
  if (!cancel_requested_) {
    enter(RunStatus::Running, transition);
    return transition;
  }
  // Canceled while starting: the process exists now, so it is stopped like any running one.
  stop_sent_at_ = now;
  transition.actions.push_back(RunAction::Stop);
  return transition;
}

RunLifecycle::Transition RunLifecycle::cancel(TimePoint now) {
  Transition transition;
  if (cancel_requested_ || phase_ == RunPhase::Finalizing || phase_ == RunPhase::Ended)
    return transition;
  cancel_requested_ = true;
  enter(RunStatus::CancelRequested, transition);
  if (phase_ == RunPhase::Running) {
    stop_sent_at_ = now;
    transition.actions.push_back(RunAction::Stop);
  }
  return transition;
}

RunLifecycle::Transition RunLifecycle::process_ended(TimePoint) {
  Transition transition;
  if (phase_ != RunPhase::Running && phase_ != RunPhase::Launching) return transition;
  phase_ = RunPhase::Finalizing;
  stop_sent_at_.reset();
  enter(RunStatus::Finalizing, transition);  // not after a cancel: it stays CancelRequested
  transition.actions.push_back(RunAction::Finalize);
  return transition;
}

RunLifecycle::Transition RunLifecycle::finalized(const RunOutcome& outcome, TimePoint) {
  if (phase_ != RunPhase::Finalizing) return {};
  return conclude(outcome);
}

RunLifecycle::Transition RunLifecycle::end(const RunOutcome& outcome) {
  if (phase_ == RunPhase::Ended) return {};
  return conclude(outcome);
}

RunLifecycle::Transition RunLifecycle::tick(TimePoint now) {
  Transition transition;
  auto deadline = next_deadline();
  if (!deadline || now < *deadline) return transition;
  killed_ = true;
  transition.actions.push_back(RunAction::Kill);
  return transition;
}

std::optional<RunLifecycle::TimePoint> RunLifecycle::next_deadline() const {
  if (phase_ != RunPhase::Running || !stop_sent_at_ || killed_) return std::nullopt;
  return *stop_sent_at_ + stop_timeout_;
}

}  // namespace amlnode::agent
