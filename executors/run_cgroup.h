#pragma once

// A run's processes held in a cgroup (v2) of their own, so that whatever happens to its
// supervisor, none of them outlives the run (docs/security.md). The shim joins the cgroup before
// it starts the job, so everything the job starts is in it; once the shim is gone, for any reason
// (it ended the run, or it was SIGKILLed), the agent kills what is left through `cgroup.kill` and
// removes the cgroup.
//
// Where: below the agent's own cgroup in the v2 hierarchy (/sys/fs/cgroup on a pure v2 host, or
// /sys/fs/cgroup/unified on a hybrid one, whose v2 hierarchy has no controllers but still offers
// cgroup.kill), in a folder `amlnode-runs`. Under systemd the unit has `Delegate=yes`, so that
// subtree is the service's to manage. Each run's cgroup is named by a hash of its run folder,
// so it is found again after an agent restart and two agents on one host never meet.
//
// Where cgroups cannot be had (no v2 hierarchy, no write access to it, a kernel without
// cgroup.kill, or AMLNODE_RUN_CGROUPS=0), runs are held as before: by the shim alone, as a
// subreaper that stops its process tree. The agent says so at start and on /metrics.

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>

#include "common/result.h"

namespace amlnode::executors {

struct CgroupSupport {
  bool available = false;
  std::filesystem::path base;  // <v2 mount><own cgroup>/amlnode-runs
  std::string why_not;         // when not available
};

// Detected once per process (the first call), then the same answer.
const CgroupSupport& run_cgroup_support();

// The cgroup for the run in `run_dir`; nullopt without cgroup support.
std::optional<std::filesystem::path> run_cgroup_path(const std::filesystem::path& run_dir);

// Makes the cgroup (a leftover of an earlier attempt in the same folder is ended first).
Result<void> create_run_cgroup(const std::filesystem::path& cgroup);

// Kills every process in the cgroup, waits (at most 5 s) until it is empty and removes it.
// Returns how many processes it held. A cgroup that does not exist held none.
Result<std::size_t> end_run_cgroup(const std::filesystem::path& cgroup);

}  // namespace amlnode::executors
