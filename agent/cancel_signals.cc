#include "agent/cancel_signals.h"

#include <signal.h>

#include <atomic>

namespace amlnode::agent {

namespace {

// Lock-free, so the handler may store to it (async-signal-safe).
std::atomic<bool> recorded{false};
static_assert(std::atomic<bool>::is_always_lock_free);

void on_cancel_signal(int) {
  recorded.store(true);
}

}  // namespace

void record_cancel_signals() {
  struct sigaction action {};
  action.sa_handler = on_cancel_signal;
  sigemptyset(&action.sa_mask);
  // Restarted, so that a signal never fails a read or write of the preparation with EINTR.
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
}

bool cancel_signal_recorded() {
  return recorded.load();
}

}  // namespace amlnode::agent
