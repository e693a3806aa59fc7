// Runs in containers against the real daemon: the entry script in a built environment, shm,
// environment, outputs, byte-exact logs, stop with grace, OOM, removal.

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <future>
#include <iostream>
#include <thread>

#include "docker/runtime.h"
#include "tests/docker/docker_test_support.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace amlnode::docker {
namespace {

using test::contains;
using test::services;
using test::TempDir;
using Clock = std::chrono::steady_clock;

// The test base image with nothing added (no build).
spec::Environment base_environment() {
  spec::Environment environment;
  environment.docker.enabled = true;
  environment.docker.base_image = services().base_image;
  return environment;
}

Result<ContainerOutcome> run(ContainerRuntime& runtime, const executors::Plan& plan,
                             const spec::Job& job, const std::string& image) {
  auto spec = container_spec_for(plan, job, image, {});
  if (!spec) return spec.error();
  return run_container(runtime, *spec);
}

void require_removed(ContainerRuntime& runtime, const executors::Plan& plan) {
  auto left = runtime.list_containers(std::string(kRunIdLabel) + "=" + plan.run_id);
  REQUIRE(left.ok());
  CHECK(left->empty());
}

TEST_CASE(
    "run: an entry script runs in a built environment with a pip package from the "
    "local wheel",
    "[docker]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  auto environment = base_environment();
  environment.python.pip_packages = {"amlnode-testpkg"};
  ImageRequest request;
  request.environment = environment;
  std::string progress;
  auto image = runtime->ensure_image(request, [&](std::string_view t) { progress += t; });
  INFO(progress);
  REQUIRE(image.ok());
  CHECK((image->source == ImageSource::Built || image->source == ImageSource::CacheHit));

  auto plan = test::make_plan(state.path(), {"python", "train.py", "--epochs", "2"});
  test::TempDir scratch;
  std::filesystem::copy_file(
      scratch.write("train.py",
                    "import sys, amlnode_testpkg\n"
                    "print('package says', amlnode_testpkg.VALUE, 'args', sys.argv[1:])\n"
                    "open('outputs/model.txt', 'w').write('trained')\n"),
      plan.working_dir / "train.py");
  auto outcome = run(*runtime, plan, test::docker_job(environment), image->image);
  REQUIRE(outcome.ok());
  CHECK(outcome->exit_code == 0);
  CHECK_FALSE(outcome->oom_killed);
  auto log = test::slurp(plan.std_log);
  CHECK(log == "package says amlnode-testpkg-ok args ['--epochs', '2']\n");
  CHECK(test::slurp(plan.working_dir / "outputs" / "model.txt") == "trained");
  require_removed(*runtime, plan);
}

TEST_CASE("run: /dev/shm has the requested size", "[docker]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  auto plan = test::make_plan(
      state.path(),
      {"python", "-c", "import os; s = os.statvfs('/dev/shm'); print(s.f_blocks * s.f_frsize)"});
  plan.shm_size_bytes = 256ull << 20;
  auto outcome = run(*runtime, plan, test::docker_job(base_environment()), services().base_image);
  REQUIRE(outcome.ok());
  CHECK(test::slurp(plan.std_log) == std::to_string(256ull << 20) + "\n");

  auto job = test::docker_job(base_environment());
  job.environment.docker.arguments = {"--shm-size=64m"};
  auto overridden = test::make_plan(state.path(), plan.argv);
  REQUIRE(run(*runtime, overridden, job, services().base_image).ok());
  CHECK(test::slurp(overridden.std_log) == std::to_string(64ull << 20) + "\n");
}

TEST_CASE("run: the container sees the plan's variables and none of the host's", "[docker]") {
  ::setenv("AMLNODE_HOST_ONLY_VARIABLE", "leaked", 1);
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  auto plan = test::make_plan(
      state.path(),
      {"python", "-c",
       "import os; print(sorted(k for k in os.environ if k.startswith(('AZUREML', 'AMLNODE', "
       "'PLAN_'))), os.environ.get('PLAN_VALUE'), os.getcwd())"});
  plan.env.emplace_back("PLAN_VALUE", "it's \"quoted\" $HOME");
  auto outcome = run(*runtime, plan, test::docker_job(base_environment()), services().base_image);
  REQUIRE(outcome.ok());
  CHECK(test::slurp(plan.std_log) == "['AZUREML_RUN_ID', 'PLAN_VALUE'] it's \"quoted\" $HOME " +
                                         plan.working_dir.string() + "\n");
}

TEST_CASE("run: output lands byte-exact in std_log.txt, stdout and stderr in order", "[docker]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  auto plan = test::make_plan(state.path(), {"python", "-c",
                                             "import os\n"
                                             "os.write(1, bytes(range(256)))\n"
                                             "os.write(2, b'\\r\\n-stderr-\\x00\\xff')\n"
                                             "os.write(1, b'\\nno newline at the end')\n"
                                             "raise SystemExit(7)\n"});
  auto outcome = run(*runtime, plan, test::docker_job(base_environment()), services().base_image);
  REQUIRE(outcome.ok());
  CHECK(outcome->exit_code == 7);
  std::string expected;
  for (int i = 0; i < 256; ++i) expected += static_cast<char>(i);
  expected += std::string("\r\n-stderr-\0\xff", 12);
  expected += "\nno newline at the end";
  CHECK(test::slurp(plan.std_log) == expected);
  CHECK(outcome->runtime_output.empty());
  require_removed(*runtime, plan);
}

TEST_CASE("run: output reaches std_log.txt with nobody attached to the container", "[docker]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  auto plan = test::make_plan(
      state.path(),
      {"python", "-c",
       "import time\nfor i in range(3):\n    print('line', i)\n    time.sleep(0.2)\n"});
  auto spec =
      container_spec_for(plan, test::docker_job(base_environment()), services().base_image, {});
  REQUIRE(spec.ok());
  // Only create and start: nothing of amlnode reads the container's streams, as after a crash.
  auto id = runtime->create_container(*spec);
  REQUIRE(id.ok());
  REQUIRE(runtime->start_container(*id).ok());
  CHECK(test::eventually(
      [&] {
        return std::filesystem::exists(plan.std_log) &&
               test::slurp(plan.std_log) == "line 0\nline 1\nline 2\n";
      },
      std::chrono::seconds(20)));
  auto found = runtime->list_containers(std::string(kRunIdLabel) + "=" + plan.run_id);
  REQUIRE(found.ok());
  REQUIRE(found->size() == 1);
  CHECK((*found)[0].id == *id);
  auto exit = runtime->wait_container(*id);
  REQUIRE(exit.ok());
  CHECK(exit->exit_code == 0);
  REQUIRE(runtime->remove_container(*id).ok());
  require_removed(*runtime, plan);
}

// Starts the plan's container on another thread and returns once its log has `marker`.
struct Background {
  std::string id;
  std::future<Result<ContainerOutcome>> outcome;
};

Background start_in_background(ContainerRuntime& runtime, const executors::Plan& plan,
                               const std::string& marker) {
  auto spec =
      container_spec_for(plan, test::docker_job(base_environment()), services().base_image, {});
  REQUIRE(spec.ok());
  auto started = std::make_shared<std::promise<std::string>>();
  Background background;
  background.outcome = std::async(std::launch::async, [&runtime, spec = *spec, started] {
    bool notified = false;
    auto outcome = run_container(runtime, spec, [&](const std::string& id) {
      notified = true;
      started->set_value(id);
    });
    if (!notified) started->set_value("");
    return outcome;
  });
  background.id = started->get_future().get();
  REQUIRE(!background.id.empty());
  REQUIRE(test::eventually(
      [&] {
        return std::filesystem::exists(plan.std_log) && contains(test::slurp(plan.std_log), marker);
      },
      std::chrono::seconds(20)));
  return background;
}

TEST_CASE("run: stop kills a container that ignores SIGTERM after the grace period", "[docker]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  auto plan = test::make_plan(
      state.path(), {"python", "-c",
                     "import signal, time\n"
                     "signal.signal(signal.SIGTERM, lambda *a: print('got SIGTERM, ignoring'))\n"
                     "print('ready')\n"
                     "time.sleep(600)\n"});
  auto background = start_in_background(*runtime, plan, "ready");
  auto start = Clock::now();
  REQUIRE(runtime->stop_container(background.id, std::chrono::seconds(2)).ok());
  double stopped_after = std::chrono::duration<double>(Clock::now() - start).count();
  auto outcome = background.outcome.get();
  REQUIRE(outcome.ok());
  CHECK(stopped_after >= 1.9);
  CHECK(stopped_after < 10);
  CHECK(outcome->exit_code == 137);
  CHECK(contains(test::slurp(plan.std_log), "got SIGTERM, ignoring"));
  require_removed(*runtime, plan);
}

TEST_CASE("run: stop ends a well-behaved container at once with SIGTERM", "[docker]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  auto plan = test::make_plan(state.path(),
                              {"python", "-c", "import time\nprint('ready')\ntime.sleep(600)\n"});
  auto background = start_in_background(*runtime, plan, "ready");
  auto start = Clock::now();
  REQUIRE(runtime->stop_container(background.id, std::chrono::seconds(30)).ok());
  CHECK(std::chrono::duration<double>(Clock::now() - start).count() < 5);
  auto outcome = background.outcome.get();
  REQUIRE(outcome.ok());
  CHECK(outcome->exit_code == 143);
  require_removed(*runtime, plan);
}

TEST_CASE("run: a container killed for memory is reported as OOM-killed", "[docker]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  auto plan = test::make_plan(
      state.path(),
      {"python", "-c", "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))\n"});
  auto job = test::docker_job(base_environment());
  job.environment.docker.arguments = {"--memory", "64m"};
  auto outcome = run(*runtime, plan, job, services().base_image);
  REQUIRE(outcome.ok());
  CHECK(outcome->exit_code == 137);
  CHECK(outcome->oom_killed);
}

TEST_CASE("run: a command missing from the image fails with the container's own words",
          "[docker]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  auto plan = test::make_plan(state.path(), {"no-such-program-here"});
  auto outcome = run(*runtime, plan, test::docker_job(base_environment()), services().base_image);
  REQUIRE(outcome.ok());
  CHECK(outcome->exit_code == 127);
  CHECK(contains(test::slurp(plan.std_log), "no-such-program-here"));
  require_removed(*runtime, plan);
}

TEST_CASE("run: a base_dockerfile environment runs with the amlnode layers on top", "[docker]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  auto environment = base_environment();
  environment.docker.base_image.clear();
  environment.docker.base_dockerfile =
      "FROM " + services().base_image +
      "\nRUN [\"python\", \"-c\", \"open('/marker', 'w').write('from the dockerfile')\"]\n";
  environment.python.pip_packages = {"amlnode-testpkg"};
  environment.environment_variables = {{"FROM_ENVIRONMENT", "yes"}};
  ImageRequest request;
  request.environment = environment;
  auto image = runtime->ensure_image(request, {});
  REQUIRE(image.ok());
  auto plan = test::make_plan(state.path(), {"python", "-c",
                                             "import os, amlnode_testpkg\n"
                                             "print(open('/marker').read(), amlnode_testpkg.VALUE, "
                                             "os.environ['FROM_ENVIRONMENT'])\n"});
  auto outcome = run(*runtime, plan, test::docker_job(environment), image->image);
  REQUIRE(outcome.ok());
  CHECK(test::slurp(plan.std_log) == "from the dockerfile amlnode-testpkg-ok yes\n");
}

TEST_CASE("run: timing of create, start and first output", "[.timing]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  for (int i = 0; i < 5; ++i) {
    auto plan = test::make_plan(state.path(), {"/bin/sh", "-c", "echo hi"});
    auto spec =
        container_spec_for(plan, test::docker_job(base_environment()), services().base_image, {});
    REQUIRE(spec.ok());
    auto start = Clock::now();
    auto id = runtime->create_container(*spec);
    REQUIRE(id.ok());
    REQUIRE(runtime->start_container(*id).ok());
    REQUIRE(test::eventually(
        [&] {
          return std::filesystem::exists(plan.std_log) && test::slurp(plan.std_log) == "hi\n";
        },
        std::chrono::seconds(20)));
    auto first_output = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    REQUIRE(runtime->wait_container(*id).ok());
    auto exited = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    REQUIRE(runtime->remove_container(*id).ok());
    auto removed = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    std::cout << "create+start+first output " << first_output << " ms, exited " << exited
              << " ms, removed " << removed << " ms\n";
  }
}

}  // namespace
}  // namespace amlnode::docker
