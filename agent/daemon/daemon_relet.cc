// Runs stopped on this node because their lease moved on, until their process is gone; and a
// later epoch of such a run leased to this node meanwhile, which waits for that.
//
// The reference control plane does not lease a run back to the node it was taken from until that
// node has let go of it (docs/controlplane.md), but it forgets that across its own restarts, and
// another control plane may not do it at all. Preparing the new epoch while the old process runs
// would remove the run folder under it, and the old shim would then write its exit.json into
// the new folder: so the new epoch waits here, polled every kRetiringPoll.

#include <spdlog/spdlog.h>

#include "agent/daemon/daemon.h"

namespace amlnode::agent {

namespace {
constexpr std::chrono::milliseconds kRetiringPoll{200};
}  // namespace

// Its runtime stops the run's processes (or removes its container) without reporting anything
// more; a run whose preparation or launch is still on the pool is let go of when that returns
// (Daemon::on_prepared, Daemon::on_launched).
void Daemon::retire(ActiveRun& run) {
  RetiringRun& retiring = retiring_[run.lease.run_id];
  if (run.preparing) {
    retiring.preparing = true;
  } else if (run.started) {
    run.started->runtime->abandon();
    retiring.runtime = run.started->runtime;
    retiring.finalizing = run.finalizing;
  }
  // Looked at from the timer, not from here: stop_run is still working on the run's entry.
  schedule_retiring_check();
}

bool Daemon::still_retiring(RetiringRun& run) {
  if (run.preparing || run.finalizing) return true;
  return run.runtime && run.runtime->still_running();
}

bool Daemon::defer_while_retiring(const LeasedRun& lease) {
  auto retiring = retiring_.find(lease.run_id);
  if (retiring == retiring_.end()) return false;
  if (!still_retiring(retiring->second)) {
    retiring_.erase(retiring);
    return false;
  }
  spdlog::info("run {} leased (epoch {}); it starts once its earlier epoch's process has ended",
               lease.run_id, lease.epoch);
  retiring->second.deferred = lease;
  return true;
}

void Daemon::check_retiring() {
  std::vector<LeasedRun> ready;
  for (auto it = retiring_.begin(); it != retiring_.end();) {
    if (still_retiring(it->second)) {
      ++it;
      continue;
    }
    if (it->second.deferred) ready.push_back(*it->second.deferred);
    it = retiring_.erase(it);
  }
  if (!stopped_) {
    for (const auto& lease : ready) accept_run(lease);
  }
  schedule_retiring_check();
}

void Daemon::schedule_retiring_check() {
  if (retiring_.empty() || retiring_check_scheduled_ || stopped_) return;
  retiring_check_scheduled_ = true;
  retiring_timer_.expires_after(kRetiringPoll);
  retiring_timer_.async_wait([this](const boost::system::error_code& ec) {
    retiring_check_scheduled_ = false;
    if (!ec) check_retiring();
  });
}

}  // namespace amlnode::agent
