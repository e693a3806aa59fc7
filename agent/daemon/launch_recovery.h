#pragma once

// What a restarted agent needs to pick up a run it was launching or running when it stopped:
// finding the run's shim when neither the state store nor the shim's own shim.json names it,
// and taking the run's conda / pip environment lease again. Plus the one test hook of the launch
// path (inert unless its environment variable is set).

#include <filesystem>
#include <optional>
#include <string_view>

#include "agent/run_steps.h"
#include "executors/environments/cache.h"
#include "executors/plan.h"
#include "executors/shim/launcher.h"

namespace amlnode::agent {

// The live amlnode-shim started on `launch_file` (its argv is exactly [shim, launch_file]), found
// by a scan of /proc; nullopt when there is none. A shim is started with posix_spawn, which
// returns only once the child has exec'd, so a shim that exists at all is found by its argv.
std::optional<executors::LaunchedShim> find_shim_process(const std::filesystem::path& launch_file);

// The cache lease of the plan's conda / pip environment, taken again for a run re-attached after
// a restart (the dead agent's lease, a flock, ended with it), so eviction leaves the environment
// alone while the run goes on. nullopt (and a line in the run's log) when the plan has no such
// environment, or it was evicted while no agent held its lease.
std::optional<executors::environments::PreparedEnvironment> retake_environment_lease(
    const executors::Plan& plan, const executors::environments::EnvironmentConfig& config,
    const SystemLog& log);

// TEST HOOK, inert in production: when $AMLNODE_TEST_HOOK_CRASH equals `point`, the agent
// SIGKILLs itself there, so a test can stop it at the exact instant a crash is hardest to recover
// from ("after-launch-marker": the launch is recorded but no shim started or container created
// yet; "after-launch": the shim started but its pid not yet stored; "after-container-created": a
// Docker run's container created and its id stored, but not started). Nothing sets the variable
// outside the tests.
void test_hook_crash_at(std::string_view point);

}  // namespace amlnode::agent
