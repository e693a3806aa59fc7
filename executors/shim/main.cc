// amlnode-shim LAUNCH_JSON
//
// The per-process supervisor: one shim per job process. It reads the launch spec, detaches from
// whoever started it, runs the entry process and everything that process starts, stops all of it
// at the deadline or on cancel, and writes exit.json when the last process of the run is gone.
// docs/shim.md describes the files, the signals and every failure case.
//
// Exit status: 0 once exit.json is written (whatever the run's outcome), 1 if exit.json could not
// be written, 2 if the launch spec could not be read (the reason is on stderr).

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/fs.h"
#include "executors/shim/diag.h"
#include "executors/shim/protocol.h"
#include "executors/shim/supervisor.h"

namespace {

using amlnode::executors::shim::say;

// Launch specs are a few kilobytes; anything this large is not one.
constexpr std::size_t kMaxLaunchSpecBytes = 4 << 20;

// Descriptors 0-2 must be open before the shim opens anything else: otherwise the log file could
// become descriptor 1 and the dup2 that makes it the child's stdout would do nothing.
void ensure_standard_fds() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
    int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd >= 0 && null_fd != fd) ::close(null_fd);  // cannot happen: lowest fd is `fd`
  }
}

// The shim outlives the terminal and the process that started it: a hangup must not end it, and
// a vanished reader of its stderr must not either (writes then fail with EPIPE instead).
void ignore_hangups() {
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
}

// Its own session, so that Ctrl-C in the terminal of whoever started it, or the end of that
// terminal's session, never reaches the shim or the run directly. The launcher already starts it
// as a session leader (setsid then fails with EPERM, which is fine). Started by hand from a shell
// with job control, the shim leads a process group and cannot have its own session; it then runs
// in the shell's, where Ctrl-C arrives as SIGINT, which is a cancel.
void become_session_leader() {
  if (::setsid() < 0 && ::getsid(0) != ::getpid()) {
    say("cannot start a new session (%s); staying in the caller's", std::strerror(errno));
  }
}

// Every process of the run whose parent dies is reparented to the shim instead of to init, so the
// shim sees (and can stop) daemonised grandchildren and knows when the last process is gone.
void become_subreaper() {
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    say("cannot become a child subreaper (%s); orphans of the run may escape",
        std::strerror(errno));
  }
}

}  // namespace

int main(int argc, char** argv) {
  ensure_standard_fds();
  ignore_hangups();
  if (argc != 2) {
    say("usage: amlnode-shim LAUNCH_JSON");
    return 2;
  }

  auto text = amlnode::read_file(argv[1], kMaxLaunchSpecBytes);
  if (!text.ok()) {
    say("cannot read the launch spec: %s", text.error().message.c_str());
    return 2;
  }
  auto spec = amlnode::executors::launch_spec_from_json(*text);
  if (!spec.ok()) {
    say("%s: %s", argv[1], spec.error().message.c_str());
    return 2;
  }

  become_session_leader();
  become_subreaper();
  amlnode::executors::shim::Supervisor supervisor(std::move(*spec));
  return supervisor.run();
}
