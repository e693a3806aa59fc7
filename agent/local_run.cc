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
#include "agent/container_run.h"
#include "agent/run_lifecycle.h"
#include "agent/run_record.h"
#include "agent/run_steps.h"
#include "agent/terminal.h"
#include "common/format.h"
#include "common/fs.h"
#include "executors/environments/cache.h"
#include "executors/environments/config.h"
#include "executors/inputs.h"
#include "executors/plan.h"
#include "executors/snapshot.h"
#include "spec/load.h"

namespace amlnode::agent {

namespace fs = std::filesystem;
using executors::ExitReason;
using executors::ExitRecord;
using executors::LaunchedShim;
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
        run_dir_(options.state_dir / "runs" / run_id_),
        record_(run_dir_ / "run.json", run_id_, job_.experiment_name, clock),
        system_log_(run_dir_, clock),
        printer_(options.quiet || options.json),
        lifecycle_(stop_timeout(options.kill_grace_seconds)) {}

  int execute(const std::vector<spec::Diagnostic>& warnings);

 private:
  Result<void> prepare();
  Result<void> prepare_environment(const executors::environments::EnvironmentConfig& config);
  void supervise(const LaunchedShim& shim, LogFollower& follower);
  Result<ExitRecord> run_under_shim(LogFollower& follower);
  Result<ExitRecord> run_in_container(LogFollower& follower);
  Result<void> prepare_container(const spec::Job& job);
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
  // Holds the environment's lease (it is not evicted) for as long as the run uses it.
  std::optional<executors::environments::PreparedEnvironment> environment_;
  // Docker runs: the Engine API client and the container to run.
  std::unique_ptr<docker::ContainerRuntime> runtime_;
  std::optional<docker::ContainerSpec> container_;
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

Result<void> LocalRun::prepare_environment(
    const executors::environments::EnvironmentConfig& config) {
  auto prepared = prepare_python_environment(
      plan_, config, clock_, system_log_,
      [this](std::string_view line) { printer_.line("environment: " + std::string(line)); },
      cancel_signal_recorded);
  if (!prepared.ok()) return prepared.error();
  environment_ = std::move(prepared.value());
  return ok();
}

Result<void> LocalRun::prepare_container(const spec::Job& job) {
  auto config = docker_runtime_config(options_.config, options_.state_dir);
  if (!config.ok()) return config.error();
  auto runtime = docker::make_docker_runtime(*config);
  if (!runtime.ok()) return runtime.error();
  runtime_ = std::move(runtime.value());
  auto spec = prepare_run_container(
      *runtime_, *config, options_.config, plan_, job, system_log_,
      [this](std::string_view text) {
        printer_.line("image: " + std::string(text.substr(0, text.find_last_not_of('\n') + 1)));
      },
      cancel_signal_recorded);
  if (!spec.ok()) return spec.error();
  record_.set_environment("docker", plan_.environment_hash, spec->image);
  container_ = std::move(spec.value());
  return ok();
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
  if (plan_.python_environment) return prepare_environment(*environments);
  if (plan_.environment_kind == executors::EnvironmentKind::Docker) return prepare_container(job_);
  return ok();
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
  return outcome.exit_code >= 0 ? outcome.exit_code : kExitCanceled;
}

void LocalRun::supervise(const LaunchedShim& shim, LogFollower& follower) {
  boost::asio::io_context loop;
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
  // A stop that the supervisor has not carried out in time (a stopped or stuck shim) ends with
  // every process of the run killed through its cgroup.
  boost::asio::steady_timer overdue(loop);
  std::function<void(const RunLifecycle::Transition&)> act =
      [&](const RunLifecycle::Transition& transition) {
        show(transition, "stopping the run (grace " +
                             std::to_string(static_cast<int>(plan_.kill_grace_seconds)) + " s)");
        if (has(transition, RunAction::Stop)) {
          auto sent = executors::request_cancel(shim);
          if (!sent.ok()) printer_.line(sent.error().message);
        }
        if (has(transition, RunAction::Kill)) {
          system_log_.line("the run did not stop within its grace period: killing its processes");
          end_run_processes(run_dir_, system_log_);
        }
        if (auto deadline = lifecycle_.next_deadline()) {
          overdue.expires_at(*deadline);
          overdue.async_wait([&](const boost::system::error_code& ec) {
            if (!ec) act(lifecycle_.tick(now()));
          });
        }
      };
  auto cancel = [&] { act(lifecycle_.cancel(now())); };
  boost::asio::signal_set signals(loop, SIGINT, SIGTERM);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int) {
        if (ec) return;
        cancel();
        signals.async_wait(on_signal);
      };
  signals.async_wait(on_signal);
  // One that came between the preparation and the set above.
  if (cancel_signal_recorded()) cancel();

  int pidfd = executors::open_pidfd(shim.pid);
  boost::asio::posix::stream_descriptor shim_exit(loop);
  boost::asio::steady_timer poll(loop);
  std::function<void(const boost::system::error_code&)> poll_exit =
      [&](const boost::system::error_code&) {
        siginfo_t info{};
        if (::waitid(P_PID, static_cast<id_t>(shim.pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
            info.si_pid != 0) {
          loop.stop();
          return;
        }
        poll.expires_after(std::chrono::milliseconds(10));
        poll.async_wait(poll_exit);
      };
  if (pidfd >= 0) {
    shim_exit.assign(pidfd);
    shim_exit.async_wait(boost::asio::posix::descriptor_base::wait_read,
                         [&](const boost::system::error_code&) { loop.stop(); });
  } else {
    poll_exit({});
  }
  loop.run();
}

Result<ExitRecord> LocalRun::run_under_shim(LogFollower& follower) {
  executors::LaunchSpec spec = shim_launch_spec(plan_);
  // finish() writes the terminal run.json synced right after reading exit.json.
  spec.caller_syncs_outcome = true;
  auto shim =
      launcher_.launch(spec, run_dir_ / "launch.json", run_dir_ / "system_logs" / "shim.txt");
  if (!shim.ok()) return shim.error();
  auto launched = lifecycle_.launched(now());
  show(launched, argv_text(plan_));
  // Canceled while the shim was being started: it is stopped as soon as it can hear it.
  if (has(launched, RunAction::Stop)) {
    auto sent = executors::request_cancel(*shim);
    if (!sent.ok()) printer_.line(sent.error().message);
  }
  supervise(*shim, follower);
  int wait_status = 0;
  while (::waitpid(shim->pid, &wait_status, 0) < 0 && errno == EINTR) {
  }
  end_run_processes(run_dir_, system_log_);
  return read_exit_record(run_dir_, "wait status " + std::to_string(wait_status));
}

Result<ExitRecord> LocalRun::run_in_container(LogFollower& follower) {
  // Supervising a container blocks this thread, so the output is followed on a thread of its own.
  follower.start();
  ContainerRunHooks hooks;
  // Running begins with starting the container, as it begins with launching the shim for a
  // process: Preparing is the snapshot, the inputs and the image, nothing of the run itself.
  // The container runner carries out the stop itself (a cancel reaches it as a signal); the
  // lifecycle keeps the statuses.
  show(lifecycle_.launched(now()), container_->image + ": " + argv_text(plan_));
  hooks.on_running = [this](const std::string& id) {
    system_log_.line("container " + id + " started from " + container_->image);
  };
  hooks.canceled_before = cancel_signal_recorded;
  hooks.on_cancel_requested = [this] {
    show(lifecycle_.cancel(now()), "stopping the container (grace " +
                                       std::to_string(static_cast<int>(plan_.kill_grace_seconds)) +
                                       " s)");
  };
  std::optional<std::chrono::milliseconds> deadline;
  if (plan_.deadline_seconds) deadline = std::chrono::seconds(*plan_.deadline_seconds);
  auto grace = std::chrono::seconds(static_cast<long long>(std::ceil(plan_.kill_grace_seconds)));
  auto record = run_container_to_end(*runtime_, *container_, deadline, grace, hooks);
  if (record.ok()) {
    auto written =
        write_file_atomically(run_dir_ / "exit.json", executors::exit_record_to_json(*record));
    if (!written.ok()) system_log_.line(written.error().message);
  }
  return record;
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
  auto exit = container_ ? run_in_container(follower) : run_under_shim(follower);
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
