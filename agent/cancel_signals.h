#pragma once

// SIGINT and SIGTERM cancel `amlnode run` at any point of the run's life. The event loops that
// supervise a process or a container take them with a boost::asio::signal_set; before, between and
// after those loops (preparing the run, its last writes) this plain handler records them, and each
// loop asks, once its own set is installed, whether one came before. Without it a Ctrl-C in those
// gaps ended amlnode run at once and left run.json saying Preparing or Running.

namespace amlnode::agent {

// Installs the recording handler for SIGINT and SIGTERM. Call it again after a signal_set is gone:
// removing its last signal restores the default action.
void record_cancel_signals();

// Whether SIGINT or SIGTERM came while the recording handler was installed. Safe from any thread.
bool cancel_signal_recorded();

}  // namespace amlnode::agent
