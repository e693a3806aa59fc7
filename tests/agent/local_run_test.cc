// End-to-end tests of `amlnode run`: the real binary, the real shim, real processes and files.

#include <signal.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

struct Workspace {
  test::TempDir dir;
  fs::path state() const { return dir / "state"; }

  fs::path job(const std::string& yaml) const { return dir.write("project/job.yml", yaml); }
  fs::path file(const std::string& relative, const std::string& content) const {
    return dir.write("project/" + relative, content);
  }

  test::CommandResult run(const fs::path& job, std::vector<std::string> extra = {},
                          std::chrono::seconds timeout = 60s) const {
    std::vector<std::string> argv = {test::amlnode_binary().string(), "run", "--state-dir",
                                     state().string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(job.string());
    return test::run_command(argv, {}, timeout);
  }

  fs::path run_dir(const std::string& run_id) const { return state() / "runs" / run_id; }
  nlohmann::json run_json(const std::string& run_id) const {
    return nlohmann::json::parse(test::slurp(run_dir(run_id) / "run.json"));
  }
};

const char* kShellJob = R"(
experiment_name: e2e
user_managed: true
use_docker: false
command: )";

}  // namespace

TEST_CASE("the hello example runs, prints, and writes ./outputs", "[local_run]") {
  Workspace ws;
  auto job = fs::path(AMLNODE_SOURCE_DIR) / "examples" / "hello" / "job.yml";
  auto result = ws.run(job, {"--run-id", "hello-1"});
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  CHECK_THAT(result.out,
             Catch::Contains("hello from run hello-1 of experiment hello (2 epoch(s))"));
  CHECK_THAT(result.err, Catch::Contains("Completed"));
  auto run_dir = ws.run_dir("hello-1");
  CHECK(test::slurp(run_dir / "wd" / "outputs" / "greeting.txt") == "hello, hello\n");
  CHECK(fs::is_directory(run_dir / "wd" / "logs"));
  CHECK(fs::exists(run_dir / "wd" / "train.py"));
  // The job file is not part of the snapshot: it may hold registry credentials.
  CHECK_FALSE(fs::exists(run_dir / "wd" / "job.yml"));
  CHECK_THAT(test::slurp(run_dir / "user_logs" / "std_log.txt"),
             Catch::Contains("hello from run hello-1"));
  auto record = ws.run_json("hello-1");
  CHECK(record["status"] == "Completed");
  CHECK(record["exit_code"] == 0);
  CHECK(record["error"].is_null());
  CHECK(record["environment"]["kind"] == "user-managed");
  CHECK(record["timings"]["running_at"].is_string());
  CHECK(fs::exists(run_dir / "exit.json"));
}

TEST_CASE("the process's exit code is the run's, and run.json says why it failed", "[local_run]") {
  Workspace ws;
  auto job = ws.job(std::string(kShellJob) + "\"echo failing; exit 3\"\n");
  auto result = ws.run(job, {"--run-id", "fail-1", "--quiet"});
  CHECK(result.exit_code == 3);
  CHECK(result.out == "failing\n");
  CHECK(result.err.empty());
  auto record = ws.run_json("fail-1");
  CHECK(record["status"] == "Failed");
  CHECK(record["exit_code"] == 3);
  CHECK(record["error"]["code"] == "UserError");
  CHECK_THAT(record["error"]["message"].get<std::string>(),
             Catch::Contains("exited with status code 3"));
}

TEST_CASE("the script sees Azure ML's variables, its inputs and its own variables", "[local_run]") {
  Workspace ws;
  ws.dir.write("data/train/part-0.csv", "a,b\n");
  ws.dir.write("model/ckpt.pt", "weights");
  ws.file("show.py",
          "import os, sys\n"
          "for k in ['AZUREML_RUN_ID','AZUREML_ARM_PROJECT_NAME','AZUREML_NODE_COUNT',\n"
          "          'AZ_BATCH_IS_CURRENT_NODE_MASTER','MY_SETTING']:\n"
          "    print(k + '=' + os.environ.get(k, '<unset>'))\n"
          "print('train=' + open(os.path.join(os.environ['AZUREML_DATAREFERENCE_train'], "
          "'part-0.csv')).read().strip())\n"
          "print('model=' + open(os.path.join(os.environ['AZUREML_DATAREFERENCE_MODEL_LOCATION'], "
          "'ckpt.pt')).read())\n"
          "print('argv=' + ' '.join(sys.argv[1:]))\n"
          "print('cwd=' + os.path.basename(os.getcwd()))\n"
          "print('dirs=' + str(os.path.isdir('outputs')) + str(os.path.isdir('logs')))\n");
  auto job = ws.job(
      "experiment_name: vars\n"
      "entry_script: show.py\n"
      "script_params: {--lr: 0.5, --verbose: true}\n"
      "user_managed: true\nuse_docker: false\n"
      "inputs:\n  train: {path: ../data/train, mode: download}\n"
      "resume_from: ../model\n"
      "environment_variables: {MY_SETTING: custom}\n");
  auto result = ws.run(job, {"--run-id", "vars-1", "--quiet"});
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  CHECK_THAT(result.out, Catch::Contains("AZUREML_RUN_ID=vars-1\n"));
  CHECK_THAT(result.out, Catch::Contains("AZUREML_ARM_PROJECT_NAME=vars\n"));
  CHECK_THAT(result.out, Catch::Contains("AZUREML_NODE_COUNT=1\n"));
  CHECK_THAT(result.out, Catch::Contains("AZ_BATCH_IS_CURRENT_NODE_MASTER=true\n"));
  CHECK_THAT(result.out, Catch::Contains("MY_SETTING=custom\n"));
  CHECK_THAT(result.out, Catch::Contains("train=a,b\n"));
  CHECK_THAT(result.out, Catch::Contains("model=weights\n"));
  CHECK_THAT(result.out, Catch::Contains("argv=--lr 0.5 --verbose --resume-from "));
  CHECK_THAT(result.out, Catch::Contains("cwd=wd\n"));
  CHECK_THAT(result.out, Catch::Contains("dirs=TrueTrue\n"));
}

TEST_CASE("a run past max_run_duration_seconds fails as RunTimeout and leaves no process",
          "[local_run]") {
  Workspace ws;
  const std::string marker = "amlnode-e2e-timeout-" + std::to_string(::getpid());
  // The marker rides in each shell's command line, so the test can look for survivors.
  auto job =
      ws.job(std::string(kShellJob) + "\"(setsid sh -c 'sleep 300; : " + marker +
             "' &); exec sh -c 'sleep 301; : " + marker + "'\"\nmax_run_duration_seconds: 1\n");
  auto started = std::chrono::steady_clock::now();
  auto result = ws.run(job, {"--run-id", "timeout-1", "--kill-grace", "2"});
  auto took = std::chrono::steady_clock::now() - started;
  INFO(result.err);
  CHECK(result.exit_code == 124);
  CHECK(took < 10s);
  auto record = ws.run_json("timeout-1");
  CHECK(record["status"] == "Failed");
  CHECK(record["error"]["code"] == "RunTimeout");
  CHECK_THAT(record["error"]["message"].get<std::string>(),
             Catch::Contains("max_run_duration_seconds (1 s)"));
  CHECK(test::processes_with_marker(marker).empty());
}

TEST_CASE("SIGINT to amlnode run cancels the run with the grace period", "[local_run]") {
  Workspace ws;
  const std::string marker = "amlnode-e2e-cancel-" + std::to_string(::getpid());
  auto job = ws.job(std::string(kShellJob) + "\"echo started; exec sh -c 'sleep 300; : " + marker +
                    "'\"\n");
  auto pid = test::start_command({test::amlnode_binary().string(), "run", "--state-dir",
                                  ws.state().string(), "--run-id", "cancel-1", job.string()},
                                 ws.dir / "out.txt", ws.dir / "err.txt");
  REQUIRE(test::eventually([&] { return !test::processes_with_marker(marker).empty(); }, 10s));
  ::kill(pid, SIGINT);
  CHECK(test::wait_command(pid, 30s) == 130);
  auto record = ws.run_json("cancel-1");
  CHECK(record["status"] == "Canceled");
  CHECK(record["timings"]["running_at"].is_string());
  CHECK_THAT(test::slurp(ws.dir / "err.txt"), Catch::Contains("CancelRequested"));
  CHECK(test::processes_with_marker(marker).empty());
}

TEST_CASE("SIGTERM while the environment is built stops the build and never starts the process",
          "[local_run]") {
  Workspace ws;
  ws.file("train.py", "print('the process ran')\n");
  auto job = ws.job("entry_script: train.py\nuse_docker: false\nconda_packages: [numpy]\n");
  fs::create_directories(ws.dir / "bin");
  fs::create_symlink(AMLNODE_FAKE_CONDA, ws.dir / "bin" / "micromamba");
  auto pid_file = ws.dir / "conda.pids";
  // The conda stand-in would take 300 s to build the environment.
  auto pid =
      test::start_command({test::amlnode_binary().string(), "run", "--state-dir",
                           ws.state().string(), "--run-id", "cancel-build", job.string()},
                          ws.dir / "out.txt", ws.dir / "err.txt",
                          {"PATH=" + (ws.dir / "bin").string() + ":/usr/bin:/bin",
                           "FAKE_CONDA_LOG=" + (ws.dir / "conda.log").string(),
                           "FAKE_CONDA_SLEEP=300", "FAKE_CONDA_PIDFILE=" + pid_file.string()});
  REQUIRE(
      test::eventually([&] { return fs::exists(pid_file) && fs::file_size(pid_file) > 0; }, 20s));
  ::kill(pid, SIGTERM);
  CHECK(test::wait_command(pid, 20s) == 130);
  INFO(test::slurp(ws.dir / "err.txt"));
  auto record = ws.run_json("cancel-build");
  CHECK(record["status"] == "Canceled");
  CHECK(record["error"]["code"] == "Canceled");
  CHECK(record["exit_code"].is_null());
  CHECK_THAT(test::slurp(ws.dir / "err.txt"), Catch::Contains("CancelRequested"));
  CHECK_FALSE(fs::exists(ws.run_dir("cancel-build") / "launch.json"));
  CHECK_FALSE(fs::exists(ws.run_dir("cancel-build") / "user_logs" / "std_log.txt"));
  // Nothing of the build is left running, and no environment is left to be reused.
  CHECK(test::processes_with_marker(ws.state().string()).empty());
  auto listed = test::run_command({test::amlnode_binary().string(), "env", "list", "--json",
                                   "--state-dir", ws.state().string()});
  REQUIRE(listed.exit_code == 0);
  CHECK(nlohmann::json::parse(listed.out).empty());
}

TEST_CASE("killing amlnode run with SIGKILL leaves the run going to its end", "[local_run]") {
  Workspace ws;
  auto job = ws.job(std::string(kShellJob) + "\"sleep 1; echo survived; exit 4\"\n");
  auto pid = test::start_command({test::amlnode_binary().string(), "run", "--state-dir",
                                  ws.state().string(), "--run-id", "orphan-1", job.string()},
                                 ws.dir / "out.txt", ws.dir / "err.txt");
  auto run_dir = ws.run_dir("orphan-1");
  REQUIRE(test::eventually([&] { return fs::exists(run_dir / "shim.json"); }, 10s));
  ::kill(pid, SIGKILL);
  test::wait_command(pid, 10s);
  REQUIRE(test::eventually([&] { return fs::exists(run_dir / "exit.json"); }, 15s));
  auto exit = nlohmann::json::parse(test::slurp(run_dir / "exit.json"));
  CHECK(exit["exit_code"] == 4);
  CHECK(test::slurp(run_dir / "user_logs" / "std_log.txt") == "survived\n");
}

TEST_CASE("an invalid job exits 2, names the field, and creates no run", "[local_run]") {
  Workspace ws;
  auto job =
      ws.job("entry_script: train.py\nnode_count: zero\nuse_docker: false\nuser_managed: true\n");
  ws.file("train.py", "print('never')\n");
  auto result = ws.run(job);
  CHECK(result.exit_code == 2);
  CHECK_THAT(result.err, Catch::Contains("node_count"));
  CHECK_FALSE(fs::exists(ws.state() / "runs"));
}

TEST_CASE("a conda job on a node without conda fails before starting, saying what to install",
          "[local_run]") {
  Workspace ws;
  ws.file("train.py", "print('never')\n");
  auto job = ws.job("entry_script: train.py\nuse_docker: false\nconda_packages: [numpy]\n");
  auto result = test::run_command({test::amlnode_binary().string(), "run", "--state-dir",
                                   ws.state().string(), "--run-id", "conda-1", job.string()},
                                  {"PATH=/usr/bin:/bin"});
  CHECK(result.exit_code == 125);
  auto record = ws.run_json("conda-1");
  CHECK(record["status"] == "Failed");
  CHECK(record["error"]["code"] == "CondaNotFound");
  CHECK_THAT(record["error"]["message"].get<std::string>(),
             Catch::Contains("micromamba, mamba or conda"));
  CHECK_FALSE(fs::exists(ws.run_dir("conda-1") / "user_logs" / "std_log.txt"));
}

TEST_CASE("a missing program fails as ProcessStartFailed with exit 125", "[local_run]") {
  Workspace ws;
  ws.file("train.py", "print('never')\n");
  auto job = ws.job(
      "entry_script: train.py\nenvironment_definition:\n  python:\n"
      "    user_managed_dependencies: true\n    interpreter_path: no-such-program-amlnode\n");
  auto result = ws.run(job, {"--run-id", "missing-1"});
  CHECK(result.exit_code == 125);
  auto record = ws.run_json("missing-1");
  CHECK(record["error"]["code"] == "ProcessStartFailed");
  CHECK_THAT(record["error"]["message"].get<std::string>(),
             Catch::Contains("no-such-program-amlnode"));
}

TEST_CASE("a command's missing program is the shell's exit 127, as on Azure ML", "[local_run]") {
  Workspace ws;
  auto job =
      ws.job("user_managed: true\nuse_docker: false\ncommand: [no-such-program-amlnode, x]\n");
  auto result = ws.run(job, {"--run-id", "missing-2"});
  CHECK(result.exit_code == 127);
  CHECK_THAT(test::slurp(ws.run_dir("missing-2") / "user_logs" / "std_log.txt"),
             Catch::Contains("no-such-program-amlnode"));
}

TEST_CASE("a run id that already exists is refused without touching the old run", "[local_run]") {
  Workspace ws;
  auto job = ws.job(std::string(kShellJob) + "\"echo once\"\n");
  REQUIRE(ws.run(job, {"--run-id", "same"}).exit_code == 0);
  auto again = ws.run(job, {"--run-id", "same"});
  CHECK(again.exit_code == 125);
  CHECK_THAT(again.err, Catch::Contains("already exists"));
  CHECK(test::slurp(ws.run_dir("same") / "user_logs" / "std_log.txt") == "once\n");
}

TEST_CASE("with --json, amlnode run prints the final run.json and keeps the output off stdout",
          "[local_run]") {
  Workspace ws;
  auto job = ws.job(std::string(kShellJob) + "\"echo to-stderr-under-json\"\n");
  auto result = ws.run(job, {"--run-id", "json-1", "--json"});
  REQUIRE(result.exit_code == 0);
  auto record = nlohmann::json::parse(result.out);
  CHECK(record["run_id"] == "json-1");
  CHECK(record["status"] == "Completed");
  CHECK_THAT(result.err, Catch::Contains("to-stderr-under-json"));
}

TEST_CASE("a dry run prints the plan and runs nothing", "[local_run]") {
  Workspace ws;
  auto job =
      ws.job(std::string(kShellJob) + "[touch, should-not-exist]\nmax_run_duration_seconds: 30\n");
  auto text = ws.run(job, {"--dry-run", "--run-id", "dry-1"});
  REQUIRE(text.exit_code == 0);
  CHECK_THAT(text.out, Catch::Contains("\"/bin/sh\" \"-c\" \"touch should-not-exist\""));
  CHECK_THAT(text.out, Catch::Contains("AZUREML_RUN_ID=dry-1"));
  CHECK_THAT(text.out, Catch::Contains("30 s after start"));
  auto json = ws.run(job, {"--dry-run", "--json", "--run-id", "dry-1"});
  auto plan = nlohmann::json::parse(json.out);
  CHECK(plan["argv"] == nlohmann::json({"/bin/sh", "-c", "touch should-not-exist"}));
  CHECK(plan["shm_size"] == "2g");
  CHECK(plan["max_run_duration_seconds"] == 30);
  CHECK_FALSE(fs::exists(ws.state()));
}

TEST_CASE("a .runconfig and a native job file for the same job produce the same plan",
          "[local_run]") {
  Workspace ws;
  ws.file("train.py", "print('x')\n");
  auto native = ws.file("job.yml",
                        "experiment_name: same\n"
                        "entry_script: train.py\n"
                        "arguments: [--epochs, 3]\n"
                        "user_managed: true\nuse_docker: false\n"
                        "shm_size: 1g\n"
                        "max_run_duration_seconds: 120\n"
                        "environment_variables: {A: '1'}\n");
  auto runconfig =
      ws.file(".azureml/train.runconfig",
              "script: train.py\n"
              "arguments: [--epochs, 3]\n"
              "target: local\n"
              "framework: Python\n"
              "communicator: None\n"
              "maxRunDurationSeconds: 120\n"
              "nodeCount: 1\n"
              "environment:\n"
              "  environmentVariables: {A: '1'}\n"
              "  python:\n    userManagedDependencies: true\n    interpreterPath: python\n"
              "  docker:\n    enabled: false\n"
              "docker:\n  useDocker: false\n  shmSize: 1g\n"
              "history:\n  outputCollection: true\n");
  auto from_native = ws.run(native, {"--dry-run", "--json", "--run-id", "same-1"});
  auto from_runconfig = ws.run(runconfig, {"--dry-run", "--json", "--run-id", "same-1"});
  INFO(from_native.err << from_runconfig.err);
  REQUIRE(from_native.exit_code == 0);
  REQUIRE(from_runconfig.exit_code == 0);
  auto a = nlohmann::json::parse(from_native.out);
  auto b = nlohmann::json::parse(from_runconfig.out);
  // The experiment defaults to the project folder's name in both shapes; the native file names it.
  a.erase("experiment_name");
  b.erase("experiment_name");
  a["env"].erase("AZUREML_ARM_PROJECT_NAME");
  b["env"].erase("AZUREML_ARM_PROJECT_NAME");
  CHECK(a == b);
}

TEST_CASE("validate lists every problem with its path and exits 2", "[local_run]") {
  Workspace ws;
  auto job = ws.job("entry_script: /etc/passwd\nnode_count: 0\nshm_size: lots\nentrypoint: x.py\n");
  auto result = test::run_command({test::amlnode_binary().string(), "validate", job.string()});
  CHECK(result.exit_code == 2);
  CHECK_THAT(result.out, Catch::Contains("entry_script"));
  CHECK_THAT(result.out, Catch::Contains("node_count"));
  CHECK_THAT(result.out, Catch::Contains("shm_size"));
  CHECK_THAT(result.out, Catch::Contains("did you mean"));
  auto good = ws.job("command: [true]\n");
  CHECK(test::run_command({test::amlnode_binary().string(), "validate", good.string()}).exit_code ==
        0);
}

TEST_CASE("a pip job gets its own environment, built once and reused", "[local_run]") {
  Workspace ws;
  auto wheels = ws.dir / "wheels";
  auto made = test::run_command({"/usr/bin/python3",
                                 AMLNODE_SOURCE_DIR "/tests/executors/environments/make_wheel.py",
                                 wheels.string(), "amlnode_e2e_pkg", "1.2.3"});
  REQUIRE(made.exit_code == 0);
  auto config =
      ws.dir.write("config.yml", "environments:\n  pip_args: [--no-index, --find-links, " +
                                     wheels.string() + "]\n");
  ws.file("train.py",
          "import sys, amlnode_e2e_pkg\n"
          "print('version', amlnode_e2e_pkg.VERSION)\n"
          "print('prefix is env', sys.prefix != sys.base_prefix)\n");
  auto job =
      ws.job("entry_script: train.py\nuse_docker: false\npip_packages: [amlnode_e2e_pkg==1.2.3]\n");
  auto run = [&](const std::string& id) {
    return test::run_command({test::amlnode_binary().string(), "run", "--config", config.string(),
                              "--state-dir", ws.state().string(), "--run-id", id, job.string()},
                             {}, 300s);
  };
  auto first = run("pip-1");
  INFO(first.err);
  REQUIRE(first.exit_code == 0);
  CHECK_THAT(first.out, Catch::Contains("version 1.2.3\n"));
  CHECK_THAT(first.out, Catch::Contains("prefix is env True\n"));
  auto record = ws.run_json("pip-1");
  CHECK(record["environment"]["kind"] == "pip");
  const std::string hash = record["environment"]["hash"];
  CHECK(fs::exists(ws.state() / "envs" / hash / "bin" / "python"));
  CHECK_THAT(test::slurp(ws.run_dir("pip-1") / "system_logs" / "environment.txt"),
             Catch::Contains("amlnode_e2e_pkg"));

  auto second = run("pip-2");
  REQUIRE(second.exit_code == 0);
  CHECK(ws.run_json("pip-2")["environment"]["hash"] == hash);
  CHECK_THAT(test::slurp(ws.run_dir("pip-2") / "system_logs" / "lifecycle.txt"),
             Catch::Contains(": reused "));
  CHECK_FALSE(fs::exists(ws.run_dir("pip-2") / "system_logs" / "environment.txt"));

  auto listed =
      test::run_command({test::amlnode_binary().string(), "env", "list", "--json", "--state-dir",
                         ws.state().string(), "--config", config.string()});
  REQUIRE(listed.exit_code == 0);
  auto entries = nlohmann::json::parse(listed.out);
  REQUIRE(entries.size() == 1);
  CHECK(entries[0]["hash"] == hash);
}

TEST_CASE("amlnode controlplane runs the control plane server", "[cli]") {
  test::TempDir dir;
  auto pid = test::start_command({test::amlnode_binary().string(), "controlplane", "--listen",
                                  "127.0.0.1:0", "--data-dir", (dir / "cp").string()},
                                 dir / "out.txt", dir / "err.txt");
  bool listening = test::eventually(
      [&] {
        return test::slurp(dir / "out.txt").find("listening on http://127.0.0.1:") !=
               std::string::npos;
      },
      20s);
  ::kill(pid, SIGTERM);
  CHECK(test::wait_command(pid, 20s) == 0);
  INFO(test::slurp(dir / "err.txt"));
  CHECK(listening);
  CHECK(fs::exists(dir / "cp"));
}

TEST_CASE("a run id too long for a folder name is refused saying how long it may be",
          "[local_run]") {
  Workspace ws;
  auto job = ws.job(std::string(kShellJob) + "\"true\"\n");
  auto result = ws.run(job, {"--run-id", std::string(300, 'r')});
  CHECK(result.exit_code == 2);
  CHECK_THAT(result.err, Catch::Contains("--run-id: at most 200 characters"));
  CHECK_THAT(result.err, Catch::Contains("got 300"));
}

TEST_CASE("amlnode run refuses a link out of the snapshot as amlnode submit does", "[local_run]") {
  Workspace ws;
  auto job = ws.job(std::string(kShellJob) + "\"cat pw\"\n");
  fs::create_symlink("/etc/passwd", ws.dir / "project" / "pw");
  auto result = ws.run(job, {"--run-id", "link-1"});
  CHECK(result.exit_code == 125);
  auto record = ws.run_json("link-1");
  CHECK(record["error"]["code"] == "SnapshotFailed");
  CHECK_THAT(record["error"]["message"].get<std::string>(),
             Catch::Contains("refused snapshot entry 'pw': the link points to an absolute path "
                             "('/etc/passwd'), so it would not work on the node"));
  CHECK_FALSE(fs::exists(ws.run_dir("link-1") / "wd" / "pw"));
}
