// End-to-end tests of `amlnode run` with Docker environments, against the real dockerd, registry,
// base image and wheel that scripts/test-services starts (the ctest fixture docker_services).

#include <signal.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/docker/docker_test_support.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

struct DockerWorkspace {
  test::TempDir dir;
  fs::path config;

  explicit DockerWorkspace(const std::string& extra_docker_config = "") {
    const auto& services = test::services();
    config = dir.write("config.yml",
                       "docker:\n  host: " + services.docker_host +
                           "\n  pip_install_options: [--no-index, --find-links, /amlnode/wheels]\n"
                           "  local_wheel_dir: " +
                           services.wheels.string() + "\n" + extra_docker_config);
  }
  fs::path state() const { return dir / "state"; }
  fs::path job(const std::string& yaml) const { return dir.write("project/job.yml", yaml); }
  fs::path file(const std::string& relative, const std::string& content) const {
    return dir.write("project/" + relative, content);
  }
  std::vector<std::string> argv(const fs::path& job, std::vector<std::string> extra) const {
    std::vector<std::string> out = {test::amlnode_binary().string(),
                                    "run",
                                    "--config",
                                    config.string(),
                                    "--state-dir",
                                    state().string()};
    out.insert(out.end(), extra.begin(), extra.end());
    out.push_back(job.string());
    return out;
  }
  test::CommandResult run(const fs::path& job, std::vector<std::string> extra = {}) const {
    return test::run_command(argv(job, extra), {}, 300s);
  }
  fs::path run_dir(const std::string& id) const { return state() / "runs" / id; }
  nlohmann::json run_json(const std::string& id) const {
    return nlohmann::json::parse(test::slurp(run_dir(id) / "run.json"));
  }
};

std::string docker_job(const std::string& body) {
  return "use_docker: true\ncustom_docker_image: " + test::services().base_image + "\n" + body;
}

// Containers of a run still known to the daemon, by its run-id label.
std::size_t containers_of(const std::string& run_id) {
  auto runtime = test::make_runtime(fs::path("/tmp"));
  auto listed = runtime->list_containers("amlnode.run_id=" + run_id);
  REQUIRE(listed.ok());
  return listed->size();
}

}  // namespace

TEST_CASE(
    "a script runs in a built image with a pip package, the shm size, its variables and outputs",
    "[docker]") {
  DockerWorkspace ws;
  const auto run_id = "docker-pip-" + test::nonce();
  ws.file("train.py",
          "import os, amlnode_testpkg\n"
          "print('package', amlnode_testpkg.__name__)\n"
          "shm = [l for l in open('/proc/mounts') if ' /dev/shm ' in l][0]\n"
          "print('shm', [f for f in shm.split()[3].split(',') if f.startswith('size=')][0])\n"
          "print('run', os.environ['AZUREML_RUN_ID'], os.environ['MY_VAR'])\n"
          "print('host variable leaked:', 'AMLNODE_HOST_ONLY' in os.environ)\n"
          "os.makedirs('outputs', exist_ok=True)\n"
          "open('outputs/model.txt', 'w').write('trained in a container\\n')\n");
  auto job =
      ws.job(docker_job("entry_script: train.py\npip_packages: [amlnode-testpkg]\n"
                        "shm_size: 300m\nenvironment_variables: {MY_VAR: from-job, NONCE: " +
                        run_id + "}\n"));
  auto result = test::run_command(ws.argv(job, {"--run-id", run_id, "--quiet"}),
                                  {"AMLNODE_HOST_ONLY=1"}, 300s);
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  CHECK_THAT(result.out, Catch::Contains("package amlnode_testpkg\n"));
  CHECK_THAT(result.out, Catch::Contains("shm size=307200k\n"));
  CHECK_THAT(result.out, Catch::Contains("run " + run_id + " from-job\n"));
  CHECK_THAT(result.out, Catch::Contains("host variable leaked: False\n"));
  CHECK(test::slurp(ws.run_dir(run_id) / "wd" / "outputs" / "model.txt") ==
        "trained in a container\n");
  auto record = ws.run_json(run_id);
  CHECK(record["status"] == "Completed");
  CHECK(record["environment"]["kind"] == "docker");
  CHECK_THAT(record["environment"]["image"].get<std::string>(), Catch::StartsWith("amlnode/env:"));
  CHECK(containers_of(run_id) == 0);

  // The same environment again: the image is reused, nothing is built.
  const auto second_id = run_id + "-again";
  auto again = ws.run(job, {"--run-id", second_id});
  REQUIRE(again.exit_code == 0);
  CHECK_THAT(test::slurp(ws.run_dir(second_id) / "system_logs" / "lifecycle.txt"),
             Catch::Contains("(cache-hit)"));
  CHECK_FALSE(fs::exists(ws.run_dir(second_id) / "system_logs" / "image_build.txt"));

  // `amlnode image list` shows it; `image prune` evicts it once no container uses it.
  const std::string image = record["environment"]["image"];
  auto image_command = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {test::amlnode_binary().string(), "image"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(),
                {"--json", "--config", ws.config.string(), "--state-dir", ws.state().string()});
    auto result = test::run_command(argv, {}, 120s);
    REQUIRE(result.exit_code == 0);
    return nlohmann::json::parse(result.out);
  };
  auto has_image = [&](const nlohmann::json& images) {
    for (const auto& listed : images) {
      for (const auto& tag : listed["tags"]) {
        if (tag == image) return true;
      }
    }
    return false;
  };
  CHECK(has_image(image_command({"list"})));
  auto pruned = image_command({"prune", "--budget-bytes", "0"});
  CHECK(has_image(pruned["removed"]));
  CHECK_FALSE(has_image(image_command({"list"})));
}

TEST_CASE("a container past its deadline is stopped, fails as RunTimeout and is removed",
          "[docker]") {
  DockerWorkspace ws;
  const auto run_id = "docker-timeout-" + test::nonce();
  auto job =
      ws.job(docker_job("command: \"trap '' TERM; echo started; sleep 300\"\n"
                        "max_run_duration_seconds: 1\n"));
  auto started = std::chrono::steady_clock::now();
  auto result = ws.run(job, {"--run-id", run_id, "--kill-grace", "1"});
  auto took = std::chrono::steady_clock::now() - started;
  INFO(result.err);
  CHECK(result.exit_code == 124);
  CHECK(took < 30s);
  auto record = ws.run_json(run_id);
  CHECK(record["error"]["code"] == "RunTimeout");
  CHECK(test::slurp(ws.run_dir(run_id) / "user_logs" / "std_log.txt") == "started\n");
  CHECK(containers_of(run_id) == 0);
}

TEST_CASE("Ctrl-C cancels a container run with the grace period", "[docker]") {
  DockerWorkspace ws;
  const auto run_id = "docker-cancel-" + test::nonce();
  auto job = ws.job(docker_job("command: 'echo started; exec sleep 300'\n"));
  auto pid = test::start_command(ws.argv(job, {"--run-id", run_id}), ws.dir / "out.txt",
                                 ws.dir / "err.txt");
  auto log = ws.run_dir(run_id) / "user_logs" / "std_log.txt";
  REQUIRE(
      test::eventually([&] { return fs::exists(log) && test::slurp(log) == "started\n"; }, 120s));
  ::kill(pid, SIGINT);
  CHECK(test::wait_command(pid, 60s) == 130);
  CHECK(ws.run_json(run_id)["status"] == "Canceled");
  CHECK(containers_of(run_id) == 0);
}

TEST_CASE("SIGTERM while the image is built stops the build and never creates the container",
          "[docker]") {
  DockerWorkspace ws;
  const auto run_id = "docker-cancel-build-" + test::nonce();
  const std::string marker = "amlnode-cancel-build-" + test::nonce();
  // The Dockerfile's RUN step says when it runs, then would take 299 s.
  ws.file("docker/Dockerfile",
          "FROM " + test::services().base_image +
              "\nRUN [\"sh\", \"-c\", \"echo ready-$((6*7)); sleep 299; echo " + marker + "\"]\n");
  ws.file("train.py", "print('the process ran')\n");
  auto job = ws.job(
      "entry_script: train.py\nenvironment_definition:\n  python: {user_managed_dependencies: "
      "true}\n  docker:\n    enabled: true\n    base_dockerfile: docker/Dockerfile\n");
  auto pid = test::start_command(ws.argv(job, {"--run-id", run_id}), ws.dir / "out.txt",
                                 ws.dir / "err.txt");
  auto build_log = ws.run_dir(run_id) / "system_logs" / "image_build.txt";
  REQUIRE(test::eventually(
      [&] {
        return fs::exists(build_log) &&
               test::slurp(build_log).find("ready-42") != std::string::npos;
      },
      120s));
  ::kill(pid, SIGTERM);
  CHECK(test::wait_command(pid, 30s) == 130);
  INFO(test::slurp(ws.dir / "err.txt"));
  auto record = ws.run_json(run_id);
  CHECK(record["status"] == "Canceled");
  CHECK(record["exit_code"].is_null());
  CHECK(containers_of(run_id) == 0);
  CHECK(test::eventually([&] { return test::processes_with_marker(marker).empty(); }, 30s));
  CHECK_THAT(test::slurp(ws.dir / "err.txt"), Catch::Contains("was canceled"));
}

TEST_CASE("killing amlnode run mid-run loses no output of the container", "[docker]") {
  DockerWorkspace ws;
  const auto run_id = "docker-orphan-" + test::nonce();
  auto job =
      ws.job(docker_job("command: 'i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo line "
                        "$i; sleep 0.01; done; echo done'\n"));
  auto pid = test::start_command(ws.argv(job, {"--run-id", run_id}), ws.dir / "out.txt",
                                 ws.dir / "err.txt");
  auto log = ws.run_dir(run_id) / "user_logs" / "std_log.txt";
  REQUIRE(test::eventually([&] { return fs::exists(log) && fs::file_size(log) > 0; }, 120s));
  ::kill(pid, SIGKILL);
  test::wait_command(pid, 10s);
  REQUIRE(
      test::eventually([&] { return test::slurp(log).find("done\n") != std::string::npos; }, 60s));
  std::string expected;
  for (int i = 1; i <= 300; ++i) expected += "line " + std::to_string(i) + "\n";
  CHECK(test::slurp(log) == expected + "done\n");
  // The orphaned container is still known by its label, for the daemon to find and clean up.
  auto runtime = test::make_runtime(ws.state());
  auto listed = runtime->list_containers("amlnode.run_id=" + run_id);
  REQUIRE(listed.ok());
  for (const auto& container : *listed) (void)runtime->remove_container(container.id);
}

TEST_CASE("a private base image is pulled with credentials that appear nowhere", "[docker]") {
  const auto& services = test::services();
  test::remove_image(services.private_image);
  DockerWorkspace ws;
  const auto run_id = "docker-private-" + test::nonce();
  auto job = ws.job(
      "command: \"python -c 'print(1 and \\\"private ok\\\")'\"\n"
      "environment_definition:\n"
      "  docker:\n    enabled: true\n    base_image: " +
      services.private_image +
      "\n"
      "    base_image_registry: {address: " +
      services.registry + ", username: " + services.registry_user +
      ", password: " + services.registry_password +
      "}\n"
      "  python: {user_managed_dependencies: true}\n");
  auto result = ws.run(job, {"--run-id", run_id});
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  CHECK_THAT(result.out, Catch::Contains("private ok"));
  auto dry = ws.run(job, {"--dry-run", "--json"});
  for (const auto& text :
       {result.out, result.err, dry.out, dry.err, test::all_file_contents(ws.state())}) {
    CHECK_FALSE(test::contains(text, services.registry_password));
  }

  const auto wrong_id = "docker-wrong-" + test::nonce();
  auto wrong = ws.job(
      "command: \"python -c 'print(1)'\"\n"
      "environment_definition:\n"
      "  docker:\n    enabled: true\n    base_image: " +
      services.private_image_unpulled +
      "\n"
      "    base_image_registry: {address: " +
      services.registry + ", username: " + services.registry_user +
      ", password: not-the-password-" + wrong_id +
      "}\n"
      "  python: {user_managed_dependencies: true}\n");
  auto failed = ws.run(wrong, {"--run-id", wrong_id});
  CHECK(failed.exit_code == 125);
  auto record = ws.run_json(wrong_id);
  CHECK(record["error"]["code"] == "ImagePullFailed");
  for (const auto& text : {failed.out, failed.err, test::all_file_contents(ws.state())}) {
    CHECK_FALSE(test::contains(text, "not-the-password-" + wrong_id));
  }
}

TEST_CASE("Docker being down is a clear error, not a hang", "[docker]") {
  test::TempDir dir;
  auto config = dir.write("config.yml",
                          "docker:\n  host: unix://" + (dir / "no-docker.sock").string() + "\n");
  auto job = dir.write("project/job.yml", docker_job("command: [true]\n"));
  auto started = std::chrono::steady_clock::now();
  auto result = test::run_command(
      {test::amlnode_binary().string(), "run", "--config", config.string(), "--state-dir",
       (dir / "state").string(), "--run-id", "down-1", job.string()},
      {}, 60s);
  CHECK(std::chrono::steady_clock::now() - started < 20s);
  CHECK(result.exit_code == 125);
  auto record = nlohmann::json::parse(test::slurp(dir / "state" / "runs" / "down-1" / "run.json"));
  CHECK(record["error"]["code"] == "DockerUnavailable");
  CHECK_THAT(record["error"]["message"].get<std::string>(), Catch::Contains("no-docker.sock"));
}

TEST_CASE("a Docker run of several ranks starts them in one container under the shim",
          "[docker][distributed]") {
  DockerWorkspace ws;
  const auto run_id = "docker-ranks-" + test::nonce();
  const auto scripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "distributed";
  ws.file("tf_peers.py", test::slurp(scripts / "tf_peers.py"));
  auto job = ws.job(docker_job(
      "user_managed: true\nentry_script: tf_peers.py\n"
      "distributed_training: {type: tensorflow, worker_count: 2, parameter_server_count: 1}\n"));
  auto result = ws.run(job, {"--run-id", run_id});
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  auto logs = ws.run_dir(run_id) / "user_logs";
  CHECK_THAT(test::slurp(logs / "std_log_process_00.txt"), Catch::Contains("worker 0 at"));
  CHECK_THAT(test::slurp(logs / "std_log_process_01.txt"), Catch::Contains("worker 1 at"));
  CHECK_THAT(test::slurp(logs / "std_log_process_02.txt"),
             Catch::Contains("heard ['worker0', 'worker1']"));
  // The shim inside said what it did in the run's shim log, and each rank's end is recorded.
  CHECK_THAT(test::slurp(ws.run_dir(run_id) / "system_logs" / "shim.txt"),
             Catch::Contains("rank 2: started"));
  auto exit = nlohmann::json::parse(test::slurp(ws.run_dir(run_id) / "exit.json"));
  CHECK(exit["ranks"].size() == 3);
  CHECK(containers_of(run_id) == 0);
}

TEST_CASE("in a Docker run, the first rank to fail stops the others and is named",
          "[docker][distributed]") {
  DockerWorkspace ws;
  const auto run_id = "docker-rank-fails-" + test::nonce();
  const auto scripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "distributed";
  ws.file("rank_fails.py", test::slurp(scripts / "rank_fails.py"));
  auto job =
      ws.job(docker_job("user_managed: true\nentry_script: rank_fails.py\n"
                        "distributed_training: {type: pytorch, communication_backend: gloo, "
                        "process_count: 4}\n"));
  auto started = std::chrono::steady_clock::now();
  auto result = ws.run(job, {"--run-id", run_id, "--kill-grace", "1"});
  auto took = std::chrono::steady_clock::now() - started;
  INFO(result.out << result.err);
  CHECK(result.exit_code == 3);
  CHECK(took < 30s);
  auto record = ws.run_json(run_id);
  CHECK(record["error"]["message"] ==
        "Rank 2 of 4 ('python') exited with status code 3; the other ranks were stopped; its "
        "log is user_logs/std_log_process_02.txt");
  CHECK(containers_of(run_id) == 0);
}

TEST_CASE(
    "a ParallelRunStep in a container: its workers run the entry script there, every row once",
    "[docker][parallel]") {
  DockerWorkspace ws;
  const auto run_id = "docker-prs-" + test::nonce();
  for (int i = 1; i <= 6; ++i) ws.file("data/f" + std::to_string(i) + ".txt", "x");
  // Each row says whether its worker saw Docker's marker file, and its Python's executable.
  ws.file("score.py",
          "import os, sys\n"
          "def init():\n    pass\n"
          "def run(mini_batch):\n"
          "    where = 'container' if os.path.exists('/.dockerenv') else 'host'\n"
          "    return [f'{os.path.basename(f)} {where} {sys.executable}' for f in mini_batch]\n");
  auto job = ws.job(
      "script: score.py\n"
      "environment:\n  docker: {enabled: true, base_image: " +
      test::services().base_image +
      "}\n  python: {user_managed_dependencies: true}\n"
      "inputs:\n  images: {path: data, dataset: file}\n"
      "parallel_run: {mini_batch_size: 2, error_threshold: 0, output_action: append_row, "
      "process_count_per_node: 2}\n");
  auto result = ws.run(job, {"--run-id", run_id});
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  std::string expected;
  for (int i = 1; i <= 6; ++i)
    expected += "f" + std::to_string(i) + ".txt container /usr/bin/python\n";
  CHECK(test::slurp(ws.run_dir(run_id) / "wd" / "outputs" / "parallel_run_step.txt") == expected);
  CHECK_THAT(test::slurp(ws.run_dir(run_id) / "wd" / "logs" / "job_result.txt"),
             Catch::StartsWith("Completed\n3 mini-batches: 3 processed"));
  CHECK(containers_of(run_id) == 0);
}
