#include "agent/local_run.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cmath>
#include <cstring>
#include <random>

#include "agent/cancel_signals.h"
#include "agent/run_lifecycle.h"
#include "agent/run_record.h"
#include "agent/run_runtime.h"
#include "agent/run_steps.h"
#include "agent/terminal.h"
#include "common/format.h"
#include "common/fs.h"
#include "executors/environments/cache.h"
#include "executors/environments/config.h"
#include "executors/inputs.h"
#include "executors/plan.h"
#include "executors/run_folder.h"
#include "executors/snapshot.h"
#include "spec/load.h"

namespace amlnode::agent {

namespace fs = std::filesystem;
using executors::ExitReason;
using executors::ExitRecord;
using executors::Plan;
using spec::RunStatus;

namespace {

void print_diagnostics(const spec::LoadResult& loaded, const fs::path& file) {
  for (const auto& warning : loaded.warnings) {
    std::fprintf(stderr, "%s: warning: %s\n", file.c_str(), warning.to_string().c_str());
  }
  for (const auto& error : loaded.errors) {
    std::fprintf(stderr, "%s: error: %s\n", file.c_str(), error.to_string().c_str());
  }
}

std::string sanitized(const std::string& name) {
  std::string out;
  for (char c : name)
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') ? c : '_';
  return out.empty() ? "run" : out;
}

// How long a stop may take before the run's processes are killed outright: the grace period, and
// a margin for the supervisor's own SIGKILL sweep to land.
constexpr std::chrono::milliseconds kStopMargin{5000};
std::chrono::milliseconds stop_timeout(double grace_seconds) {
  return std::chrono::milliseconds(static_cast<long long>(std::ceil(grace_seconds * 1000))) +
         kStopMargin;
}

class LocalRun {
 public:
  LocalRun(const LocalRunOptions& options, std::shared_ptr<Clock> clock,
           executors::ProcessLauncher& launcher, spec::Job job, std::string run_id)
      : options_(options),
        clock_(clock),
        launcher_(launcher),
        job_(std::move(job)),
        run_id_(std::move(run_id)),
        run_dir_(executors::RunFolder::of(options.state_dir, run_id_).root),
        record_(run_dir_ / "run.json", run_id_, job_.experiment_name, clock),
        system_log_(run_dir_, clock),
        printer_(options.quiet || options.json),
        lifecycle_(stop_timeout(options.kill_grace_seconds)) {}

  int execute(const std::vector<spec::Diagnostic>& warnings);

 private:
  Result<void> prepare();
  // Launches the run through its runtime and supervises it until nothing of it is left: its
  // output to the terminal, cancel signals, an overdue stop. Fails only when it did not start.
  Result<ExitRecord> run_to_end(LogFollower& follower);
  RunOutcome finish(const Result<ExitRecord>& exit);
  int conclude(const RunOutcome& outcome);
  // Shows and records the status a lifecycle transition entered, if any.
  void show(const RunLifecycle::Transition& transition, const std::string& detail = "");
  void enter(RunStatus status, const std::string& detail = "");
  static bool has(const RunLifecycle::Transition& transition, RunAction action);
  RunLifecycle::TimePoint now() const { return std::chrono::steady_clock::now(); }

  const LocalRunOptions& options_;
  std::shared_ptr<Clock> clock_;
  executors::ProcessLauncher& launcher_;
  spec::Job job_;
  std::string run_id_;
  fs::path run_dir_;
  Plan plan_;
  // How the run's processes run here (agent/run_runtime.h): host processes or a container.
  std::unique_ptr<RunRuntime> runtime_;
  RunRecord record_;
  SystemLog system_log_;
  StatusPrinter printer_;
  RunLifecycle lifecycle_;
};

void LocalRun::enter(RunStatus status, const std::string& detail) {
  if (!record_.transition(status)) return;
  // Queued and Finalizing are followed by the next status within microseconds here, so run.json
  // is not rewritten for them; the next write still records when they began. Every status that
  // lasts (Preparing, Running, CancelRequested) is on disk while it does.
  if (status != RunStatus::Queued && status != RunStatus::Finalizing) {
    auto saved = record_.save(spec::is_terminal(status));
    if (!saved.ok()) std::fprintf(stderr, "amlnode: %s\n", saved.error().message.c_str());
  }
  printer_.line(run_id_ + ": " + spec::to_string(status) + (detail.empty() ? "" : ": " + detail));
}

Result<void> LocalRun::prepare() {
  auto environments = environment_config(options_.config, options_.state_dir);
  if (!environments.ok()) return environments.error();
  plan_ = executors::resolve_plan(job_, plan_context(options_.config, options_.state_dir, run_id_,
                                                     options_.kill_grace_seconds, *environments));
  record_.set_environment(executors::to_string(plan_.environment_kind), plan_.environment_hash);
  if (plan_.cannot_run) return *plan_.cannot_run;

  // The job file is left out: it may hold registry credentials, and the run gets all it says
  // through the plan.
  auto listing =
      executors::list_snapshot(job_.source_directory, {}, {options_.state_dir, job_.job_file});
  if (!listing.ok()) return listing.error();
  system_log_.line(
      "snapshot: " + std::to_string(listing->files) + " files, " + std::to_string(listing->bytes) +
      " bytes from " + job_.source_directory.string() +
      (listing->ignore_file.empty() ? "" : " (honouring " + listing->ignore_file + ")"));
  auto copied = executors::copy_snapshot(job_.source_directory, *listing, plan_.working_dir);
  if (!copied.ok()) return copied;
  if (auto staged = make_outputs_and_stage_inputs(plan_, system_log_); !staged.ok()) return staged;
  // Ctrl-C during the snapshot copy: no environment or image is built for a run that will not run.
  if (cancel_signal_recorded()) return ok();
  RunRuntimeContext context;
  context.config = options_.config;
  context.state_dir = options_.state_dir;
  context.clock = clock_;
  context.launcher = &launcher_;
  runtime_ = make_run_runtime(plan_, std::move(context));
  const std::string label(runtime_->prepares());
  auto prepared = runtime_->prepare(
      plan_, job_,
      [this, label](std::string_view text) {
        printer_.line(label + ": " + std::string(text.substr(0, text.find_last_not_of('\n') + 1)));
      },
      cancel_signal_recorded);
  if (prepared.ok() && !runtime_->image().empty())
    record_.set_environment("docker", plan_.environment_hash, runtime_->image());
  return prepared;
}

bool LocalRun::has(const RunLifecycle::Transition& transition, RunAction action) {
  return std::find(transition.actions.begin(), transition.actions.end(), action) !=
         transition.actions.end();
}

void LocalRun::show(const RunLifecycle::Transition& transition, const std::string& detail) {
  if (transition.entered) enter(*transition.entered, detail);
}

// Records the terminal status the lifecycle concluded with. A run canceled before its process
// started has no exit code; `amlnode run` then exits 130.
int LocalRun::conclude(const RunOutcome& outcome) {
  const auto& error = outcome.error;
  if (error) record_.set_error(*error);
  if (outcome.exit_code >= 0) record_.set_exit_code(outcome.exit_code);
  enter(outcome.status, error ? error->code + ": " + error->message : "");
  system_log_.line(std::string("run ended: ") + spec::to_string(outcome.status) +
                   (error ? " (" + error->code + ": " + error->message + ")" : ""));
  if (options_.json) std::printf("%s\n", record_.to_json().dump(2).c_str());
  // A Batch task whose exit code fails nothing (is_positive_exit_code_failure: false) completed.
  if (outcome.status == spec::RunStatus::Completed) return 0;
  return outcome.exit_code >= 0 ? outcome.exit_code : kExitCanceled;
}

Result<ExitRecord> LocalRun::run_to_end(LogFollower& follower) {
  boost::asio::io_context loop;
  // Taken over before the run starts: a signal from here on waits in the set for the loop.
  boost::asio::signal_set signals(loop, SIGINT, SIGTERM);
  if (auto launched = runtime_->launch(); !launched.ok()) return launched.error();
  // A stop the runtime has not carried out in time (a stopped or stuck supervisor) ends with
  // every process of the run killed.
  boost::asio::steady_timer overdue(loop);
  std::function<void(const RunLifecycle::Transition&)> act =
      [&](const RunLifecycle::Transition& transition) {
        show(transition, "stopping the run (grace " +
                             std::to_string(static_cast<int>(plan_.kill_grace_seconds)) + " s)");
        if (has(transition, RunAction::Stop)) runtime_->stop();
        if (has(transition, RunAction::Kill)) runtime_->kill();
        if (auto deadline = lifecycle_.next_deadline()) {
          overdue.expires_at(*deadline);
          overdue.async_wait([&](const boost::system::error_code& ec) {
            if (!ec) act(lifecycle_.tick(now()));
          });
        }
      };
  show(lifecycle_.launched(now()), runtime_->describe());
  runtime_->watch(loop, [&] {
    signals.cancel();
    overdue.cancel();
    loop.stop();
  });
  // The run's output is copied to the terminal from this loop, which saves starting a thread.
  boost::asio::steady_timer follow(loop);
  std::function<void(const boost::system::error_code&)> on_follow =
      [&](const boost::system::error_code& ec) {
        if (ec) return;
        follower.copy_new();
        follow.expires_after(LogFollower::kPollInterval);
        follow.async_wait(on_follow);
      };
  follow.expires_after(LogFollower::kPollInterval);
  follow.async_wait(on_follow);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int) {
        if (ec) return;
        act(lifecycle_.cancel(now()));
        signals.async_wait(on_signal);
      };
  signals.async_wait(on_signal);
  // One that came between the preparation and the set above.
  if (cancel_signal_recorded()) act(lifecycle_.cancel(now()));
  loop.run();
  return runtime_->release();
}

// How the run ended, from its exit record. Without one, a run whose cancel had to kill its
// processes is Canceled all the same; otherwise the supervisor failed.
RunOutcome LocalRun::finish(const Result<ExitRecord>& exit) {
  RunOutcome outcome;
  if (exit.ok()) {
    outcome = outcome_of(*exit, plan_);
    apply_script_status(outcome, run_dir_, system_log_);
  } else {
    outcome = canceled_if_stopped({RunStatus::Failed, exit.error(), kExitBeforeStart},
                                  lifecycle_.cancel_requested());
  }
  release_outside_inputs(plan_);
  return outcome;
}

int LocalRun::execute(const std::vector<spec::Diagnostic>& warnings) {
  record_cancel_signals();
  auto made = make_run_folder(options_.state_dir, run_id_);
  if (!made.ok()) {
    std::fprintf(stderr, "amlnode: %s\n", made.error().message.c_str());
    return kExitBeforeStart;
  }
  record_.set_job_file(job_.job_file);
  for (const auto& warning : warnings) record_.add_warning(warning.to_string());
  printer_.line(run_id_ + ": run folder " + run_dir_.string());
  enter(RunStatus::Queued);
  show(lifecycle_.start(now()));
  auto prepared = prepare();
  if (cancel_signal_recorded()) show(lifecycle_.cancel(now()), "the process will not be started");
  auto next = prepared.ok() ? lifecycle_.prepared(now())
                            : lifecycle_.preparation_failed(prepared.error(), now());
  if (has(next, RunAction::Conclude)) {
    release_outside_inputs(plan_);
    return conclude(*next.outcome);
  }

  LogFollower follower(plan_.std_log, options_.json ? STDERR_FILENO : STDOUT_FILENO);
  auto exit = run_to_end(follower);
  // The supervising loop's signal set restored the default actions when it went.
  record_cancel_signals();
  follower.finish();
  // A process (or container) that never started fails the run as a failed preparation does.
  if (lifecycle_.phase() == RunPhase::Launching) {
    auto failed = lifecycle_.preparation_failed(
        exit.ok() ? Error{"ProcessStartFailed", "not started"} : exit.error(), now());
    release_outside_inputs(plan_);
    return conclude(*failed.outcome);
  }
  show(lifecycle_.process_ended(now()));
  return conclude(*lifecycle_.finalized(finish(exit), now()).outcome);
}

}  // namespace

fs::path default_state_dir() {
  if (const char* dir = std::getenv("AMLNODE_STATE_DIR"); dir && *dir) return dir;
  if (::geteuid() == 0) return "/var/lib/amlnode";
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg && *xdg)
    return fs::path(xdg) / "amlnode";
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : "/tmp") / ".local" / "state" / "amlnode";
}

std::string new_run_id(const std::string& experiment_name,
                       std::chrono::system_clock::time_point now) {
  std::random_device random;
  char suffix[9];
  std::snprintf(suffix, sizeof suffix, "%08x", static_cast<unsigned>(random()));
  return sanitized(experiment_name) + "_" + std::to_string(unix_millis(now) / 1000) + "_" + suffix;
}

// A run id names its folder, and a folder's name holds at most 255 bytes.
constexpr std::size_t kMaxRunIdBytes = 200;

bool is_valid_run_id(const std::string& run_id) {
  if (run_id.empty() || run_id.size() > kMaxRunIdBytes || run_id.front() == '.') return false;
  for (char c : run_id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.')
      return false;
  }
  return true;
}

int run_local(const LocalRunOptions& options, std::shared_ptr<Clock> clock,
              executors::ProcessLauncher& launcher) {
  spec::LoadOptions load_options;
  load_options.source_dir_override = options.source_dir;
  load_options.experiment_override = options.experiment;
  load_options.script_override = options.script;
  load_options.arguments_override = options.script_arguments;
  auto loaded = spec::load_job_file(options.job_file, load_options);
  print_diagnostics(loaded, options.job_file);
  if (!loaded.ok()) return kExitInvalidJob;
  if (options.run_id && !is_valid_run_id(*options.run_id)) {
    std::string shown = printable(*options.run_id, 60);
    if (options.run_id->size() > kMaxRunIdBytes) {
      std::fprintf(stderr,
                   "amlnode: --run-id: at most %zu characters (it names a folder), got %zu: %s\n",
                   kMaxRunIdBytes, options.run_id->size(), shown.c_str());
    } else {
      std::fprintf(stderr,
                   "amlnode: --run-id: expected letters, digits, '_', '-' or '.' (not first), got "
                   "\"%s\"\n",
                   shown.c_str());
    }
    return kExitInvalidJob;
  }
  auto resolved = resolve_node_references(*loaded.job, options.config);
  if (!resolved) {
    std::fprintf(stderr, "%s: error: %s\n", options.job_file.string().c_str(),
                 resolved.error().message.c_str());
    return kExitInvalidJob;
  }
  for (const auto& note : *resolved) std::fprintf(stderr, "amlnode: note: %s\n", note.c_str());
  std::string run_id =
      options.run_id.value_or(new_run_id(loaded.job->experiment_name, clock->now()));
  if (options.dry_run) {
    auto environments = environment_config(options.config, options.state_dir);
    if (!environments.ok()) {
      std::fprintf(stderr, "amlnode: %s\n", environments.error().message.c_str());
      return kExitInvalidJob;
    }
    auto plan = executors::resolve_plan(*loaded.job,
                                        plan_context(options.config, options.state_dir, run_id,
                                                     options.kill_grace_seconds, *environments));
    if (options.json) {
      std::printf("%s\n", executors::plan_to_json(plan).dump(2).c_str());
    } else {
      std::printf("%s", executors::plan_to_text(plan).c_str());
    }
    return 0;
  }
  LocalRun run(options, clock, launcher, std::move(*loaded.job), run_id);
  return run.execute(loaded.warnings);
}

}  // namespace amlnode::agent
