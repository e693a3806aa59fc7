#pragma once

// Reading /proc and signalling processes safely. Shared by the shim (which walks its process tree
// to stop a run) and the launcher (which identifies a shim by pid and start time).
//
// Nothing here allocates except list_processes(), which returns a vector sized by the number of
// processes on the machine.

#include <sys/types.h>

#include <optional>
#include <vector>

namespace amlnode::executors::proc {

// The fields of /proc/<pid>/stat the shim and launcher need.
struct Stat {
  pid_t pid = 0;
  pid_t ppid = 0;                     // field 4
  char state = '?';                   // field 3: R, S, D, Z (zombie), X (dead), ...
  unsigned long long start_time = 0;  // field 22: clock ticks after boot; with pid, identifies
                                      // a process uniquely
};

// Reads /proc/<pid>/stat ("self" when pid is 0). nullopt when there is no such process.
std::optional<Stat> read_stat(pid_t pid);

// Parses the text of a /proc/<pid>/stat file. The command name (field 2) may contain spaces and
// parentheses, so parsing starts after the last ')'.
std::optional<Stat> parse_stat(const char* text, std::size_t length);

// Every process below `root` (children, grandchildren, ...), found by following the ppid links of
// a full /proc scan, in no particular order. Zombies are included: they keep their pid until reaped
// but cannot be signalled, so callers that count the living skip state 'Z'.
std::vector<Stat> list_descendants(pid_t root);

// Sends `sig` to the process `target` only if it is still that very process (same start time).
// Uses a pidfd where the kernel has one, so a pid reused between the /proc scan and the signal
// is never hit. Returns true if the signal was delivered.
bool signal_exact(const Stat& target, int sig);

// pidfd_open(2); -1 with errno set when unsupported or when there is no such process.
int pidfd_open(pid_t pid);

// Sends `sig` to every living descendant of `root`. Returns how many were signalled.
int signal_descendants(pid_t root, int sig);

}  // namespace amlnode::executors::proc
