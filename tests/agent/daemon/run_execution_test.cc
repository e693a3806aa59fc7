// Re-attaching runs after an agent restart (agent/daemon/run_execution.h), with real shims: the
// launch window between starting a shim and storing its pid, and the environment lease a
// re-attached run takes again.

#include "agent/daemon/run_execution.h"

#include <sys/wait.h>

#include <catch2/catch.hpp>

#include "executors/environments/cache.h"
#include "executors/environments/layout.h"
#include "spec/load.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace amlnode::agent;

namespace {

namespace fs = std::filesystem;
namespace envs = executors::environments;

const char* kPlainJob = "entry_script: job.sh\nuser_managed: true\nuse_docker: false\n";
const char* kPipJob = "entry_script: job.sh\nuse_docker: false\npip_packages: [requests]\n";

// A run folder as a preparation leaves it just before the launch, and the environment the daemon
// gives runs.
struct Fixture {
  explicit Fixture(const std::string& job_text) {
    env.state_dir = dir / "state";
    env.clock = make_system_clock();
    env.launcher =
        executors::make_shim_launcher(fs::path(AMLNODE_BINARY_DIR) / "bin" / "amlnode-shim");
    lease = LeasedRun{"exp_1800000000_0badcafe", 1, "exp", job_text, "job.yml"};
    run_dir = env.state_dir / "runs" / lease.run_id;
    REQUIRE(make_run_folder(env.state_dir, lease.run_id).ok());
    dir.write("state/runs/" + lease.run_id + "/wd/job.sh", "echo started\nsleep 30\n");
  }
  ~Fixture() {
    if (shim.pid <= 0) return;
    (void)executors::request_cancel(shim);
    ::waitpid(shim.pid, nullptr, 0);
  }

  executors::Plan plan() {
    auto environments = environment_config(env.config, env.state_dir);
    REQUIRE(environments.ok());
    spec::LoadOptions options;
    options.source_dir_override = run_dir / "wd";
    auto loaded = spec::load_job_text(lease.job_text, run_dir / "wd" / "job.yml", options);
    REQUIRE(loaded.ok());
    return executors::resolve_plan(
        *loaded.job, plan_context(env.config, env.state_dir, lease.run_id, 1.0, *environments));
  }

  // Starts the run's shim the way prepare_and_launch does, and waits until it is under way.
  void launch() {
    auto launched = env.launcher->launch(shim_launch_spec(plan()), run_dir / "launch.json",
                                         run_dir / "system_logs" / "shim.txt");
    REQUIRE(launched.ok());
    shim = *launched;
    REQUIRE(test::eventually([&] { return fs::exists(run_dir / "shim.json"); },
                             std::chrono::seconds(10)));
  }

  test::TempDir dir;
  RunEnvironment env;
  LeasedRun lease;
  fs::path run_dir;
  executors::LaunchedShim shim;
};

}  // namespace

TEST_CASE("a shim started just before the agent died is found by its launch file", "[daemon]") {
  Fixture f(kPlainJob);
  f.launch();
  // The agent died before it stored the pid, and before the shim wrote shim.json.
  fs::remove(f.run_dir / "shim.json");

  auto found = reattach_run(f.env, f.lease, std::nullopt, std::nullopt, /*launching=*/true);
  REQUIRE(found.ok());
  auto shim = (*found)->runtime->shim();
  REQUIRE(shim);
  CHECK(shim->pid == f.shim.pid);
  CHECK(shim->start_time == f.shim.start_time);
  // Alive: its processes are sampled from it.
  auto root = (*found)->runtime->sampled_root();
  REQUIRE(root);
  CHECK(root->pid == f.shim.pid);
  CHECK(test::slurp(f.run_dir / "system_logs" / "lifecycle.txt")
            .find("re-attached to shim " + std::to_string(f.shim.pid)) != std::string::npos);
}

TEST_CASE("a re-attached run is watched, stopped and released through its runtime", "[daemon]") {
  Fixture f(kPlainJob);
  f.launch();
  auto found = reattach_run(f.env, f.lease, f.shim);
  REQUIRE(found.ok());
  RunRuntime& runtime = *(*found)->runtime;
  boost::asio::io_context loop;
  bool ended = false;
  runtime.watch(loop, [&] { ended = true; });
  runtime.stop();
  loop.run_for(std::chrono::seconds(20));
  REQUIRE(ended);
  CHECK_FALSE(runtime.sampled_root());
  auto exit = runtime.release();
  REQUIRE(exit.ok());
  CHECK(exit->reason == executors::ExitReason::Canceled);
  CHECK_FALSE(runtime.still_running());
  f.shim = {};  // reaped by the release
}

TEST_CASE("a recorded launch that left no shim fails instead of starting the run again",
          "[daemon]") {
  Fixture f(kPlainJob);
  auto interrupted = reattach_run(f.env, f.lease, std::nullopt, std::nullopt, /*launching=*/true);
  REQUIRE_FALSE(interrupted.ok());
  CHECK(interrupted.error().code == "LaunchInterrupted");
  // Without the launch recorded, nothing can have started: the run is simply prepared again.
  auto fresh = reattach_run(f.env, f.lease, std::nullopt, std::nullopt, /*launching=*/false);
  REQUIRE_FALSE(fresh.ok());
  CHECK(fresh.error().code == "NotStarted");
}

TEST_CASE("a re-attached pip run holds its environment's lease again, so prune keeps it",
          "[daemon]") {
  Fixture f(kPipJob);
  auto plan = f.plan();
  REQUIRE(plan.python_environment);
  auto environments = environment_config(f.env.config, f.env.state_dir).value();
  // The environment the run was prepared with, as the cache leaves a finished build.
  auto paths = envs::env_paths(environments.envs_dir, plan.python_environment->hash);
  fs::create_directories(paths.prefix / "bin");
  f.dir.write(fs::relative(paths.marker, f.dir.path()).string(),
              "{\"kind\": \"pip\", \"size_bytes\": 4096}\n");
  f.launch();

  auto reattached = reattach_run(f.env, f.lease, f.shim);
  REQUIRE(reattached.ok());
  CHECK(envs::lock_is_held(paths.lease_lock));

  envs::EnvironmentCache cache(environments);
  auto pruned = cache.prune(envs::PruneOptions{0, false});
  REQUIRE(pruned.ok());
  CHECK(pruned->evicted.empty());
  REQUIRE(pruned->kept_in_use.size() == 1);
  CHECK(pruned->kept_in_use[0].hash == plan.python_environment->hash);
  CHECK(fs::exists(paths.marker));

  // Once the run lets go (it ended), the environment can be evicted like any other.
  reattached->reset();
  CHECK_FALSE(envs::lock_is_held(paths.lease_lock));
  auto later = cache.prune(envs::PruneOptions{0, false});
  REQUIRE(later.ok());
  CHECK(later->evicted.size() == 1);
}
