// The run lifecycle's rules, with a manual clock: no processes, no sleeps.

#include "agent/run_lifecycle.h"

#include <catch2/catch.hpp>

using namespace amlnode;
using namespace amlnode::agent;
using namespace std::chrono_literals;
using spec::RunStatus;

namespace {

using Actions = std::vector<RunAction>;
const auto t0 = RunLifecycle::TimePoint{} + 1000s;

RunLifecycle running(RunLifecycle::TimePoint at = t0) {
  RunLifecycle lifecycle(12s);
  lifecycle.start(at);
  lifecycle.prepared(at);
  lifecycle.launched(at);
  return lifecycle;
}

}  // namespace

TEST_CASE("a run goes Queued, Preparing, Running, Finalizing and ends as its outcome says",
          "[lifecycle]") {
  RunLifecycle lifecycle(12s);
  CHECK(lifecycle.status() == RunStatus::Queued);
  auto started = lifecycle.start(t0);
  CHECK(started.entered == RunStatus::Preparing);
  CHECK(started.actions == Actions{RunAction::Prepare});
  auto prepared = lifecycle.prepared(t0 + 1s);
  CHECK_FALSE(prepared.entered);  // Running begins when the process does
  CHECK(prepared.actions == Actions{RunAction::Launch});
  CHECK(lifecycle.phase() == RunPhase::Launching);
  auto launched = lifecycle.launched(t0 + 2s);
  CHECK(launched.entered == RunStatus::Running);
  CHECK(launched.actions.empty());
  CHECK(lifecycle.holds_slot());
  auto ended = lifecycle.process_ended(t0 + 3s);
  CHECK(ended.entered == RunStatus::Finalizing);
  CHECK(ended.actions == Actions{RunAction::Finalize});
  CHECK_FALSE(lifecycle.holds_slot());
  auto concluded = lifecycle.finalized({RunStatus::Completed, std::nullopt, 0}, t0 + 4s);
  CHECK(concluded.entered == RunStatus::Completed);
  CHECK(concluded.actions == Actions{RunAction::Conclude});
  CHECK(concluded.outcome->exit_code == 0);
  CHECK(lifecycle.phase() == RunPhase::Ended);
}

TEST_CASE("a failed preparation fails the run with its error and launches nothing", "[lifecycle]") {
  RunLifecycle lifecycle(12s);
  lifecycle.start(t0);
  auto failed = lifecycle.preparation_failed(Error{"SnapshotFailed", "no space"}, t0);
  CHECK(failed.entered == RunStatus::Failed);
  CHECK(failed.actions == Actions{RunAction::Conclude});
  CHECK(failed.outcome->error->code == "SnapshotFailed");
  CHECK(failed.outcome->exit_code == 125);
  // Nothing moves a concluded run again.
  CHECK(lifecycle.prepared(t0).actions.empty());
  CHECK(lifecycle.launched(t0).actions.empty());
  CHECK(lifecycle.cancel(t0).actions.empty());
  CHECK(lifecycle.status() == RunStatus::Failed);
}

TEST_CASE("a cancel while preparing is CancelRequested at once, and the run is never launched",
          "[lifecycle]") {
  RunLifecycle lifecycle(12s);
  lifecycle.start(t0);
  auto cancel = lifecycle.cancel(t0 + 1s);
  CHECK(cancel.entered == RunStatus::CancelRequested);
  CHECK(cancel.actions.empty());                     // nothing runs yet to be stopped
  CHECK(lifecycle.cancel(t0 + 2s).actions.empty());  // a second cancel changes nothing
  SECTION("the preparation ends well") {
    auto prepared = lifecycle.prepared(t0 + 3s);
    CHECK(prepared.actions == Actions{RunAction::Conclude});
    CHECK(prepared.entered == RunStatus::Canceled);
    CHECK(prepared.outcome->exit_code == -1);
    CHECK(prepared.outcome->error->message == "The run was canceled before its process started");
  }
  SECTION("the cancel made the preparation fail") {
    auto failed = lifecycle.preparation_failed(Error{"Canceled", "build stopped"}, t0 + 3s);
    CHECK(failed.entered == RunStatus::Canceled);
  }
}

TEST_CASE("a cancel while launching stops the process once it exists", "[lifecycle]") {
  RunLifecycle lifecycle(12s);
  lifecycle.start(t0);
  lifecycle.prepared(t0);
  CHECK(lifecycle.cancel(t0).actions.empty());
  auto launched = lifecycle.launched(t0 + 1s);
  CHECK_FALSE(launched.entered);  // it stays CancelRequested: never Running
  CHECK(launched.actions == Actions{RunAction::Stop});
  CHECK(lifecycle.status() == RunStatus::CancelRequested);
}

TEST_CASE("a cancel of a running run stops it, and kills it when the stop is overdue",
          "[lifecycle]") {
  auto lifecycle = running();
  auto cancel = lifecycle.cancel(t0 + 10s);
  CHECK(cancel.entered == RunStatus::CancelRequested);
  CHECK(cancel.actions == Actions{RunAction::Stop});
  CHECK(lifecycle.next_deadline() == t0 + 22s);
  CHECK(lifecycle.tick(t0 + 21s).actions.empty());
  CHECK(lifecycle.tick(t0 + 22s).actions == Actions{RunAction::Kill});
  CHECK(lifecycle.tick(t0 + 30s).actions.empty());  // once
  CHECK_FALSE(lifecycle.next_deadline());
  auto ended = lifecycle.process_ended(t0 + 23s);
  CHECK_FALSE(ended.entered);  // a canceled run never shows Finalizing
  CHECK(ended.actions == Actions{RunAction::Finalize});
  auto concluded = lifecycle.finalized(
      {RunStatus::Canceled, Error{"Canceled", "The run was canceled"}, 130}, t0 + 24s);
  CHECK(concluded.entered == RunStatus::Canceled);
}

TEST_CASE("a process that ends before its stop is overdue is not killed", "[lifecycle]") {
  auto lifecycle = running();
  lifecycle.cancel(t0);
  lifecycle.process_ended(t0 + 1s);
  CHECK_FALSE(lifecycle.next_deadline());
  CHECK(lifecycle.tick(t0 + 100s).actions.empty());
}

TEST_CASE("a cancel after the process ended changes nothing", "[lifecycle]") {
  auto lifecycle = running();
  lifecycle.process_ended(t0);
  CHECK(lifecycle.cancel(t0).actions.empty());
  CHECK(lifecycle.status() == RunStatus::Finalizing);
  CHECK(lifecycle.finalized({RunStatus::Completed, std::nullopt, 0}, t0).entered ==
        RunStatus::Completed);
}

TEST_CASE("a run the daemon held before a restart resumes in the phase it had recorded",
          "[lifecycle]") {
  auto was_running = RunLifecycle::resumed(RunStatus::Running, 12s);
  CHECK(was_running.phase() == RunPhase::Running);
  CHECK(was_running.process_ended(t0).entered == RunStatus::Finalizing);

  auto was_canceling = RunLifecycle::resumed(RunStatus::CancelRequested, 12s);
  CHECK(was_canceling.cancel_requested());
  CHECK(was_canceling.cancel(t0).actions.empty());  // the stop was sent before the restart
  CHECK_FALSE(was_canceling.process_ended(t0).entered);

  auto was_preparing = RunLifecycle::resumed(RunStatus::Preparing, 12s);
  CHECK(was_preparing.phase() == RunPhase::Queued);
  CHECK(was_preparing.start(t0).actions == Actions{RunAction::Prepare});

  auto was_finalizing = RunLifecycle::resumed(RunStatus::Finalizing, 12s);
  CHECK(was_finalizing.finalized({RunStatus::Failed, Error{"UserError", "x"}, 1}, t0).entered ==
        RunStatus::Failed);
}

TEST_CASE("events out of order are ignored, never moving a status backwards", "[lifecycle]") {
  RunLifecycle lifecycle(12s);
  CHECK(lifecycle.launched(t0).actions.empty());       // not prepared
  CHECK(lifecycle.process_ended(t0).actions.empty());  // nothing launched
  CHECK(lifecycle.finalized({RunStatus::Completed, std::nullopt, 0}, t0).actions.empty());
  CHECK(lifecycle.status() == RunStatus::Queued);
  lifecycle.start(t0);
  CHECK(lifecycle.start(t0).actions.empty());
  CHECK(lifecycle.status() == RunStatus::Preparing);
}

TEST_CASE("a run that ends outside the usual path concludes once, from any live phase",
          "[lifecycle]") {
  auto lifecycle = running();
  auto ended = lifecycle.end({RunStatus::Failed, Error{"SupervisorFailed", "gone"}, 125});
  CHECK(ended.entered == RunStatus::Failed);
  CHECK(ended.actions == Actions{RunAction::Conclude});
  CHECK(lifecycle.end({RunStatus::Completed, std::nullopt, 0}).actions.empty());
  CHECK(lifecycle.status() == RunStatus::Failed);
}
