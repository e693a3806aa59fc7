#pragma once

// Starting the run's entry process. Kept apart from the supervisor so the fork/exec details (and
// their async-signal-safety rules) are in one place.

#include <sys/types.h>

#include "common/result.h"
#include "executors/shim/protocol.h"

namespace amlnode::executors::shim {

// Forks and execs the entry process described by `spec`:
//  - argv[0] found through the PATH of spec.env (not the shim's own), with execvp's rules;
//  - exactly spec.env as its environment, spec.cwd as its working directory;
//  - spec.gid / spec.uid applied (supplementary groups replaced when running as root);
//  - stdin /dev/null, stdout and stderr both the one O_APPEND descriptor of spec.log_path;
//  - every signal at its default disposition and none blocked, whatever the shim had;
//  - no descriptor of the shim's other than those three.
// Returns the child's pid once the exec has succeeded. When anything before the exec fails, the
// child is reaped and the error's message says what could not be done, e.g.
// "cannot start python3: No such file or directory".
Result<pid_t> spawn_entry(const LaunchSpec& spec);

// The same for one rank of a run of several: the rank's argv and log, and spec.env with the rank's
// variables over it. cwd, uid and gid are the spec's.
Result<pid_t> spawn_rank(const LaunchSpec& spec, const RankLaunch& rank);

}  // namespace amlnode::executors::shim
