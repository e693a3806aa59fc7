#include "executors/shim/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string_view>

#include "common/clock.h"
#include "common/fs.h"
#include "executors/shim/diag.h"
#include "executors/shim/proc.h"
#include "executors/shim/spawn.h"

namespace amlnode::executors::shim {
namespace {

// After the grace period the SIGKILL sweep repeats until nothing of the run is left: a sweep lists
// the tree and kills it, and a process that forked between the listing and the kill leaves a child
// that only the next sweep sees. The first repeats come quickly; the interval then doubles, so a
// process stuck in uninterruptible sleep (a dead NFS server) costs a /proc scan a second, not a
// hundred.
constexpr std::uint64_t kFirstSweepMs = 10;
constexpr std::uint64_t kMaxSweepMs = 1000;

// Longer timers than this (about 31 years) are treated as "never"; it also keeps the conversion
// below from overflowing.
constexpr double kMaxTimerSeconds = 1e9;

long long now_ms() {
  return unix_millis(std::chrono::system_clock::now());
}

std::uint64_t to_ms(double seconds) {
  if (seconds <= 0) return 0;
  if (seconds > kMaxTimerSeconds) seconds = kMaxTimerSeconds;
  return static_cast<std::uint64_t>(std::llround(seconds * 1000.0));
}

// The shim's own environment with `over` applied: a variable of the same name is replaced.
std::vector<std::string> inherited_env(const std::vector<std::string>& over) {
  std::vector<std::string> env;
  for (char** entry = environ; *entry; ++entry) {
    std::string_view kv(*entry);
    auto name = kv.substr(0, kv.find('=') + 1);
    bool replaced = std::any_of(over.begin(), over.end(),
                                [&](const std::string& e) { return e.starts_with(name); });
    if (!replaced) env.emplace_back(kv);
  }
  env.insert(env.end(), over.begin(), over.end());
  return env;
}

Supervisor& self_of(void* handle) {
  return *static_cast<Supervisor*>(static_cast<uv_handle_t*>(handle)->data);
}

}  // namespace

Supervisor::Supervisor(LaunchSpec spec)
    : spec_(std::move(spec)), self_(::getpid()), parent_at_start_(::getppid()) {
  if (spec_.inherit_env) spec_.env = inherited_env(spec_.env);
}

int Supervisor::run() {
  if (!install_handlers()) return 1;

  // The launcher starts the shim with SIGTERM, SIGINT and SIGHUP blocked, so that a cancel sent
  // the moment it exists waits here instead of killing a shim that has no handler yet. Now the
  // handlers are in place; a pending cancel is delivered and handled once the loop runs.
  sigset_t early;
  sigemptyset(&early);
  sigaddset(&early, SIGTERM);
  sigaddset(&early, SIGINT);
  sigaddset(&early, SIGHUP);
  ::sigprocmask(SIG_UNBLOCK, &early, nullptr);

  join_cgroup();
  record_.started_at_ms = now_ms();
  std::uint64_t spawned_ns = uv_hrtime();
  if (!spec_.ranks.empty()) {
    if (spawn_ranks()) {
      write_state(child_, record_.started_at_ms);
      start_deadline(spawned_ns);
    }
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    return exit_status_;
  }
  auto child = spawn_entry(spec_);
  if (!child.ok()) {
    say("%s", child.error().message.c_str());
    record_.reason = ExitReason::SpawnFailed;
    record_.error = child.error().message;
    finish();
  } else {
    child_ = *child;
    say("started %s as pid %d", spec_.argv[0].c_str(), static_cast<int>(child_));
    write_state(child_, record_.started_at_ms);
    start_deadline(spawned_ns);
  }

  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
  return exit_status_;
}

// Starts every rank. When one cannot be started the run fails as a whole: the ranks already
// started are stopped as a failed rank's peers are.
bool Supervisor::spawn_ranks() {
  for (const auto& rank : spec_.ranks) {
    auto child = spawn_rank(spec_, rank);
    if (!child.ok()) {
      say("rank %d: %s", rank.rank, child.error().message.c_str());
      record_.reason = ExitReason::SpawnFailed;
      record_.error = "rank " + std::to_string(rank.rank) + ": " + child.error().message;
      record_.failed_rank = rank.rank;
      if (rank_of_pid_.empty()) {
        finish();
      } else {
        ranks_left_ = rank_of_pid_.size();
        write_state(child_, record_.started_at_ms);
        entry_done_ = true;  // what was started is reaped as the run's leftovers
        begin_stop("a rank could not be started");
      }
      return false;
    }
    if (child_ == 0) child_ = *child;
    rank_of_pid_[*child] = rank.rank;
    say("rank %d: started %s as pid %d", rank.rank, rank.argv[0].c_str(), static_cast<int>(*child));
  }
  ranks_left_ = rank_of_pid_.size();
  return true;
}

// Moves the shim into the run's cgroup (writing "0" to cgroup.procs moves the writer), so that
// the entry process and all it starts are in it. Without it the run is still supervised as
// before, so a failure is said and the run goes on.
void Supervisor::join_cgroup() {
  if (!spec_.cgroup) return;
  auto procs = *spec_.cgroup / "cgroup.procs";
  int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
  bool joined = fd >= 0 && ::write(fd, "0", 1) == 1;
  int err = errno;
  if (fd >= 0) ::close(fd);
  if (!joined)
    say("cannot join the run's cgroup %s: %s", spec_.cgroup->c_str(), std::strerror(err));
}

bool Supervisor::install_handlers() {
  int err = uv_loop_init(&loop_);
  if (err != 0) {
    say("cannot create the event loop: %s", uv_strerror(err));
    return false;
  }
  // SIGCHLD is handled here rather than by uv_spawn: as the subreaper the shim must reap every
  // orphan of the run with waitpid(-1), which would take the statuses libuv waits for.
  struct {
    uv_signal_t* handle;
    int signum;
  } signals[] = {{&sigchld_, SIGCHLD}, {&sigterm_, SIGTERM}, {&sigint_, SIGINT}};
  for (auto& s : signals) {
    uv_signal_init(&loop_, s.handle);
    s.handle->data = this;
    err = uv_signal_start(s.handle, &Supervisor::on_signal, s.signum);
    if (err != 0) {
      say("cannot handle signal %d: %s", s.signum, uv_strerror(err));
      return false;
    }
  }
  for (uv_timer_t* timer : {&deadline_, &grace_, &sweep_}) {
    uv_timer_init(&loop_, timer);
    timer->data = this;
  }
  return true;
}

void Supervisor::start_deadline(std::uint64_t spawned_ns) {
  if (!spec_.deadline_seconds) return;
  // The deadline counts from the spawn, not from now: writing shim.json (an fsync) came between.
  uv_update_time(&loop_);
  std::uint64_t elapsed_ms = (uv_hrtime() - spawned_ns) / 1000000;
  std::uint64_t limit_ms = to_ms(*spec_.deadline_seconds);
  uv_timer_start(&deadline_, &Supervisor::on_deadline,
                 limit_ms > elapsed_ms ? limit_ms - elapsed_ms : 0, 0);
}

void Supervisor::write_state(pid_t child, long long started_at_ms) {
  ShimState state;
  state.shim_pid = self_;
  state.shim_start_time = proc::read_stat(0).value_or(proc::Stat{}).start_time;
  state.child_pid = child;
  state.started_at_ms = started_at_ms;
  // A missing shim.json costs a restarted parent its way back to this run, not the run itself, so
  // the run goes on; the caller still has the pid and, in the end, exit.json. It is not synced:
  // the pids in it mean something only while this boot lasts, and the page cache outlives any
  // process crash, so a sync would only delay the shim's first look at its child.
  auto written = write_file_atomically(spec_.state_path, shim_state_to_json(state), false);
  if (!written.ok()) say("cannot write the state file: %s", written.error().message.c_str());
}

void Supervisor::on_signal(uv_signal_t* handle, int signum) {
  Supervisor& self = self_of(handle);
  if (signum == SIGCHLD) {
    self.reap();
    return;
  }
  if (self.stopping_) {
    say("signal %d: the run is already being stopped", signum);
    return;
  }
  say("signal %d: canceling the run", signum);
  self.record_.reason = ExitReason::Canceled;
  self.begin_stop("canceled");
}

void Supervisor::on_deadline(uv_timer_t* handle) {
  Supervisor& self = self_of(handle);
  if (self.stopping_) return;
  say("the deadline of %g s has passed", *self.spec_.deadline_seconds);
  self.record_.reason = ExitReason::Timeout;
  self.begin_stop("deadline");
}

void Supervisor::on_grace_over(uv_timer_t* handle) {
  Supervisor& self = self_of(handle);
  // Only this first sweep is logged: a process that SIGKILL cannot end yet (uninterruptible
  // sleep) would otherwise add a line per sweep.
  int count = self.kill_all();
  if (count > 0) say("grace period over: sent SIGKILL to %d process(es)", count);
  self.sweep_interval_ms_ = kFirstSweepMs;
  uv_timer_start(&self.sweep_, &Supervisor::on_sweep, self.sweep_interval_ms_, 0);
}

void Supervisor::on_sweep(uv_timer_t* handle) {
  Supervisor& self = self_of(handle);
  self.kill_all();
  self.sweep_interval_ms_ = std::min(self.sweep_interval_ms_ * 2, kMaxSweepMs);
  uv_timer_start(&self.sweep_, &Supervisor::on_sweep, self.sweep_interval_ms_, 0);
}

void Supervisor::reap() {
  // Signals coalesce, so one SIGCHLD may stand for many exits: reap until nothing is waiting.
  // Reparented orphans are our children too and are reaped (and forgotten) here.
  while (true) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      if (spec_.ranks.empty() && pid == child_) entry_ended(status);
      auto rank = rank_of_pid_.find(pid);
      if (rank != rank_of_pid_.end()) {
        int number = rank->second;
        rank_of_pid_.erase(rank);
        rank_ended(number, status);
      }
      continue;
    }
    if (pid < 0 && errno == EINTR) continue;
    // pid == 0: children remain. ECHILD: none at all. As subreaper the shim is the ancestor of
    // every process of the run (a process whose parent dies is reparented to us), so having no
    // children means no process of the run is left.
    if (pid < 0 && errno == ECHILD && entry_done_) finish();
    return;
  }
}

bool Supervisor::has_children() {
  siginfo_t info{};
  return !(::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD);
}

void Supervisor::entry_ended(int status) {
  entry_done_ = true;
  uv_timer_stop(&deadline_);
  if (WIFEXITED(status)) {
    record_.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    record_.signal = WTERMSIG(status);
  }
  if (record_.exit_code) {
    say("pid %d exited with code %d", static_cast<int>(child_), *record_.exit_code);
  } else {
    say("pid %d was killed by signal %d", static_cast<int>(child_), record_.signal.value_or(0));
  }
  if (stopping_) return;  // a Timeout or Canceled run keeps its reason
  record_.reason = WIFSIGNALED(status) ? ExitReason::Signaled : ExitReason::Exited;
  // With no children left nothing of the run is left (see reap()), so there is nothing to stop
  // and no reason to walk /proc, which costs milliseconds on a busy node: reap() finishes.
  if (!has_children()) return;
  // Whatever the entry process left running (a daemonised grandchild, a forgotten background job)
  // belongs to the run and is stopped like a timed-out run, so that the run's end is the end of
  // all of its processes.
  begin_stop("the entry process ended");
}

void Supervisor::rank_ended(int rank, int status) {
  RankExit exit{rank, std::nullopt, std::nullopt, now_ms()};
  if (WIFEXITED(status)) exit.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) exit.signal = WTERMSIG(status);
  record_.ranks.push_back(exit);
  if (exit.exit_code) {
    say("rank %d exited with code %d", rank, *exit.exit_code);
  } else {
    say("rank %d was killed by signal %d", rank, exit.signal.value_or(0));
  }
  bool failed = exit.signal || exit.exit_code.value_or(0) != 0;
  // The run's status is the first failed rank's; while it is stopped (a failure, a deadline, a
  // cancel) the others' statuses are only recorded in `ranks`.
  if (failed && !record_.failed_rank && !stopping_) {
    record_.failed_rank = rank;
    record_.exit_code = exit.exit_code;
    record_.signal = exit.signal;
    record_.reason = exit.signal ? ExitReason::Signaled : ExitReason::Exited;
    std::string why = "rank " + std::to_string(rank) + " failed";
    if (--ranks_left_ == 0) return all_ranks_ended();
    return begin_stop(why.c_str());
  }
  if (stopping_ && !record_.exit_code && !record_.signal) {
    record_.exit_code = exit.exit_code;
    record_.signal = exit.signal;
  }
  if (--ranks_left_ == 0) all_ranks_ended();
}

void Supervisor::all_ranks_ended() {
  entry_done_ = true;
  uv_timer_stop(&deadline_);
  if (stopping_) return;
  if (!record_.failed_rank) {
    record_.reason = ExitReason::Exited;
    record_.exit_code = 0;
  }
  // As for a single process: whatever the ranks left running belongs to the run and is stopped.
  if (!has_children()) return;
  begin_stop("every rank ended");
}

void Supervisor::begin_stop(const char* why) {
  stopping_ = true;
  uv_timer_stop(&deadline_);
  int count = proc::signal_descendants(self_, SIGTERM);
  if (count > 0) {
    say("%s: sent SIGTERM to %d process(es), SIGKILL follows in %g s", why, count,
        spec_.kill_grace_seconds);
    // A stopped process (SIGSTOP, Ctrl-Z in a debugger) would hold its SIGTERM until the SIGKILL;
    // continuing it lets it shut down cleanly within the grace period.
    proc::signal_descendants(self_, SIGCONT);
  }
  uv_timer_start(&grace_, &Supervisor::on_grace_over, to_ms(spec_.kill_grace_seconds), 0);
}

int Supervisor::kill_all() {
  // Two passes back to back catch most forks that raced the first listing; the sweep timer
  // catches the rest.
  int first = proc::signal_descendants(self_, SIGKILL);
  if (first > 0) proc::signal_descendants(self_, SIGKILL);
  return first;
}

void Supervisor::finish() {
  if (finished_) return;
  finished_ = true;
  record_.ended_at_ms = now_ms();
  write_exit_record();
  close_handles();
}

void Supervisor::write_exit_record() {
  // A caller that syncs the outcome itself and is still our parent reads this file within
  // milliseconds; the two syncs (about a millisecond) are then left to it. A parent that died
  // reparented us, and then this file is the only record, so it is synced.
  bool synced = !spec_.caller_syncs_outcome || ::getppid() != parent_at_start_;
  auto written = write_file_atomically(spec_.exit_path, exit_record_to_json(record_), synced);
  if (!written.ok()) {
    say("cannot write the exit record: %s", written.error().message.c_str());
    exit_status_ = 1;
    return;
  }
  say("run over: %s", to_string(record_.reason).c_str());
}

void Supervisor::close_handles() {
  // With every handle closed, uv_run returns and the shim exits.
  uv_handle_t* handles[] = {
      reinterpret_cast<uv_handle_t*>(&sigchld_), reinterpret_cast<uv_handle_t*>(&sigterm_),
      reinterpret_cast<uv_handle_t*>(&sigint_),  reinterpret_cast<uv_handle_t*>(&deadline_),
      reinterpret_cast<uv_handle_t*>(&grace_),   reinterpret_cast<uv_handle_t*>(&sweep_),
  };
  for (uv_handle_t* handle : handles) {
    if (!uv_is_closing(handle)) uv_close(handle, nullptr);
  }
}

}  // namespace amlnode::executors::shim
