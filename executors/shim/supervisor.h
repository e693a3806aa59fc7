#pragma once

// The shim's event loop: one entry process (or the ranks of a run of several), its whole process
// tree, a deadline, a cancel, and the
// two state files. See docs/shim.md for the sequence of events in each case.

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <map>

#include "executors/shim/protocol.h"

namespace amlnode::executors::shim {

class Supervisor {
 public:
  explicit Supervisor(LaunchSpec spec);
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Starts the entry process and supervises the run until no process of it remains and exit.json
  // is written. Returns the shim's exit status: 0 once exit.json is written, 1 if it could not be.
  int run();

 private:
  static void on_signal(uv_signal_t* handle, int signum);
  static void on_deadline(uv_timer_t* handle);
  static void on_grace_over(uv_timer_t* handle);
  static void on_sweep(uv_timer_t* handle);

  bool install_handlers();
  void join_cgroup();
  void start_deadline(std::uint64_t spawned_ns);
  void write_state(pid_t child, long long started_at_ms);
  bool spawn_ranks();
  void reap();
  void entry_ended(int status);
  void rank_ended(int rank, int status);
  void all_ranks_ended();
  static bool has_children();
  void begin_stop(const char* why);
  int kill_all();  // SIGKILL to every process of the run; returns how many were there
  void finish();
  void write_exit_record();
  void close_handles();

  LaunchSpec spec_;
  pid_t self_ = 0;
  pid_t parent_at_start_ = 0;  // who started us; a different parent later means it died
  pid_t child_ = 0;
  // A run of several ranks (spec_.ranks): each live rank's pid, and how many have not ended.
  std::map<pid_t, int> rank_of_pid_;
  std::size_t ranks_left_ = 0;
  bool entry_done_ = false;  // the entry process (every rank) has been reaped
  bool stopping_ = false;    // SIGTERM has gone to the run's processes
  bool finished_ = false;
  std::uint64_t sweep_interval_ms_ = 0;
  ExitRecord record_;
  int exit_status_ = 0;

  uv_loop_t loop_{};
  uv_signal_t sigchld_{};
  uv_signal_t sigterm_{};
  uv_signal_t sigint_{};
  uv_timer_t deadline_{};
  uv_timer_t grace_{};
  uv_timer_t sweep_{};
};

}  // namespace amlnode::executors::shim
