// The real amlnode-shim, started through the launcher, on real processes and files.

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <random>

#include "common/fs.h"
#include "executors/shim/launcher.h"
#include "tests/executors/shim/shim_test_support.h"
#include "tests/support/process.h"

using namespace amlnode::executors;
using namespace amlnode::test::shim;
using amlnode::read_file;
using amlnode::test::eventually;
using amlnode::test::processes_with_marker;
using amlnode::test::run_command;
using amlnode::test::slurp;
using amlnode::test::TempDir;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

ShimState read_state(const LaunchSpec& spec) {
  auto text = read_file(spec.state_path);
  REQUIRE(text.ok());
  auto state = shim_state_from_json(*text);
  REQUIRE(state.ok());
  return *state;
}

// Waits for shim.json, i.e. for the entry process to have been started.
void wait_for_start(const LaunchSpec& spec) {
  REQUIRE(eventually([&] { return fs::exists(spec.state_path); }, std::chrono::seconds(5)));
}

}  // namespace

TEST_CASE("an entry process's exit code is recorded, and shim.json identifies the shim",
          "[shim]") {
  TempDir dir;
  auto spec = make_sh_spec(dir, "echo hello; exit 42");
  auto shim = launch(spec, dir);
  require_clean_shim_exit(shim.pid);  // the shim is our direct child

  auto record = read_exit(spec);
  CHECK(record.reason == ExitReason::Exited);
  CHECK(record.exit_code == 42);
  CHECK_FALSE(record.signal);
  CHECK(record.ended_at_ms >= record.started_at_ms);
  CHECK(slurp(spec.log_path) == "hello\n");

  auto state = read_state(spec);
  CHECK(state.shim_pid == shim.pid);
  CHECK(state.shim_start_time == shim.start_time);
  CHECK(state.child_pid > 0);
  CHECK(state.child_pid != shim.pid);
  CHECK(state.started_at_ms == record.started_at_ms);
}

TEST_CASE("death by a signal the shim did not send is recorded as Signaled", "[shim]") {
  TempDir dir;
  auto spec = make_sh_spec(dir, "kill -USR1 $$");
  auto shim = launch(spec, dir);
  require_clean_shim_exit(shim.pid);

  auto record = read_exit(spec);
  CHECK(record.reason == ExitReason::Signaled);
  CHECK(record.signal == SIGUSR1);
  CHECK_FALSE(record.exit_code);
}

TEST_CASE("a program that cannot be started is a SpawnFailed naming it", "[shim]") {
  TempDir dir;

  SECTION("missing program") {
    auto spec = make_spec(dir, {"amlnode-no-such-program", "train.py"});
    auto shim = launch(spec, dir);
    require_clean_shim_exit(shim.pid);
    auto record = read_exit(spec);
    CHECK(record.reason == ExitReason::SpawnFailed);
    CHECK(record.error == "cannot start amlnode-no-such-program: No such file or directory");
    CHECK_FALSE(record.exit_code);
    // shim.json means "the process is running"; it never ran.
    CHECK_FALSE(fs::exists(spec.state_path));
  }
  SECTION("program that is not executable") {
    auto script = dir.write("bin/tool", "echo hi\n");
    fs::permissions(script, fs::perms::owner_read | fs::perms::owner_write);
    auto spec = make_spec(dir, {script.string()});
    auto shim = launch(spec, dir);
    require_clean_shim_exit(shim.pid);
    auto record = read_exit(spec);
    CHECK(record.reason == ExitReason::SpawnFailed);
    CHECK(record.error == "cannot start " + script.string() + ": Permission denied");
  }
  SECTION("missing working directory") {
    auto spec = make_spec(dir, {"true"});
    spec.cwd = dir / "no-such-dir";
    auto shim = launch(spec, dir);
    require_clean_shim_exit(shim.pid);
    auto record = read_exit(spec);
    CHECK(record.reason == ExitReason::SpawnFailed);
    CHECK_THAT(record.error, Contains("cannot change directory to " + spec.cwd.string()));
  }
  SECTION("log file that cannot be opened") {
    auto spec = make_spec(dir, {"true"});
    spec.log_path = dir / "no-such-dir" / "std_log.txt";
    auto shim = launch(spec, dir);
    require_clean_shim_exit(shim.pid);
    auto record = read_exit(spec);
    CHECK(record.reason == ExitReason::SpawnFailed);
    CHECK_THAT(record.error, Contains(spec.log_path.string()));
  }
}

TEST_CASE("the entry process gets exactly the given environment, cwd and PATH lookup",
          "[shim]") {
  TempDir dir;
  // A program that only the spec's PATH can find (the test's own PATH does not have dir/bin).
  fs::create_directories(dir / "bin");
  fs::create_symlink("/usr/bin/env", dir / "bin" / "print-env");
  fs::create_directories(dir / "work dir");

  SECTION("environment") {
    auto spec = make_spec(dir, {"print-env", "-0"});
    spec.env = {"PATH=" + (dir / "bin").string() + ":/usr/bin:/bin", "EMPTY=",
                "SPACES=a b  c", "MULTI=line1\nline2", "AZUREML_RUN_ID=run-1"};
    auto shim = launch(spec, dir);
    require_clean_shim_exit(shim.pid);
    REQUIRE(read_exit(spec).exit_code == 0);

    std::string expected;
    for (const auto& entry : spec.env) expected += entry + '\0';
    CHECK(slurp(spec.log_path) == expected);
  }
  SECTION("working directory") {
    auto spec = make_spec(dir, {"pwd"});
    spec.cwd = dir / "work dir";
    auto shim = launch(spec, dir);
    require_clean_shim_exit(shim.pid);
    REQUIRE(read_exit(spec).exit_code == 0);
    CHECK(slurp(spec.log_path) == fs::canonical(spec.cwd).string() + "\n");
  }
}

TEST_CASE("the entry process runs as the given user and group", "[shim]") {
  if (::geteuid() != 0) {
    WARN("not root: uid/gid switching is not tested");
    return;
  }
  TempDir dir;
  auto spec = make_sh_spec(dir, "id -u; id -g; id -G");
  spec.cwd = "/";
  spec.uid = 65534;
  spec.gid = 65534;
  auto shim = launch(spec, dir);
  require_clean_shim_exit(shim.pid);
  REQUIRE(read_exit(spec).exit_code == 0);
  // Root's supplementary groups are dropped along with root.
  CHECK(slurp(spec.log_path) == "65534\n65534\n65534\n");
}

TEST_CASE("stdout and stderr land byte-exact, in order, in the one log file", "[shim]") {
  TempDir dir;
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
  bytes += std::string(100, '\0') + "\r\n\xff\xfe";
  dir.write("bytes.bin", bytes);

  auto spec = make_sh_spec(
      dir, "cat bytes.bin; printf 'to stderr\\n' >&2; cat bytes.bin >&2; readlink /proc/$$/fd/1");
  // The log is appended to, never truncated: an earlier attempt's output stays.
  dir.write("std_log.txt", "earlier\n");
  auto shim = launch(spec, dir);
  require_clean_shim_exit(shim.pid);
  REQUIRE(read_exit(spec).exit_code == 0);

  // The last line shows the process's stdout is the log file itself: no pipe, no copying.
  CHECK(slurp(spec.log_path) ==
        "earlier\n" + bytes + "to stderr\n" + bytes + spec.log_path.string() + "\n");
}

TEST_CASE("200 MiB of output arrives complete and exact", "[shim]") {
  TempDir dir;
  // 1 MiB and a few bytes of random data, so that writes never line up with anything.
  std::string block(1024 * 1024 + 7, '\0');
  std::mt19937 rng(42);
  for (auto& c : block) c = static_cast<char>(rng());
  dir.write("block.bin", block);
  const int copies = 200;

  auto spec = make_sh_spec(dir, "i=0; while [ $i -lt " + std::to_string(copies) +
                                    " ]; do cat block.bin; i=$((i+1)); done");
  auto shim = launch(spec, dir);
  require_clean_shim_exit(shim.pid);
  REQUIRE(read_exit(spec).exit_code == 0);

  REQUIRE(fs::file_size(spec.log_path) == block.size() * copies);
  std::ifstream log(spec.log_path, std::ios::binary);
  std::string chunk(block.size(), '\0');
  int mismatched = 0;
  for (int i = 0; i < copies; ++i) {
    log.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    if (chunk != block) ++mismatched;
  }
  CHECK(mismatched == 0);
}

TEST_CASE("at the deadline the whole tree is stopped, double-forked daemons included",
          "[shim][deadline]") {
  TempDir dir;
  auto marker = unique_marker();
  MarkerCleanup cleanup(marker);
  // The subshell starts a daemon in its own session and exits at once, so the daemon's parent is
  // gone: only a subreaper still knows it belongs to the run.
  auto spec = make_marked_sh_spec(dir, "(setsid sleep 300 $M &) ; sleep 300 $M", marker);
  spec.deadline_seconds = 2.0;
  auto shim = launch(spec, dir);
  REQUIRE(eventually([&] { return processes_with_marker(marker).size() == 2; },
                     std::chrono::seconds(5)));

  require_clean_shim_exit(shim.pid);
  auto record = read_exit(spec);
  CHECK(record.reason == ExitReason::Timeout);
  CHECK(record.signal == SIGTERM);
  CHECK(elapsed_ms(record) >= 2000);
  CHECK(elapsed_ms(record) < 2500);
  CHECK(processes_with_marker(marker).empty());
}

TEST_CASE("the deadline's SIGTERM arrives on time", "[shim][deadline]") {
  TempDir dir;
  // The job writes down when the SIGTERM reached it (its `sleep 0.01` gets one too and ends at
  // once, so the trap runs immediately).
  auto spec = make_sh_spec(
      dir, "trap 'date +%s%3N > got_term; exit 0' TERM; while :; do sleep 0.01; done");
  spec.deadline_seconds = 1.0;
  auto shim = launch(spec, dir);
  require_clean_shim_exit(shim.pid);

  auto record = read_exit(spec);
  CHECK(record.reason == ExitReason::Timeout);
  CHECK(record.exit_code == 0);  // it handled the SIGTERM and exited by itself
  auto got_term = std::stoll(slurp(dir / "got_term"));
  // Required: within 100 ms of the deadline. The margin above that is for a loaded test machine
  // (starting `date` is part of what is measured); a timer with a coarser unit still fails.
  CHECK(got_term - record.started_at_ms >= 1000);
  CHECK(got_term - record.started_at_ms < 1250);
}

TEST_CASE("a job that ignores SIGTERM is SIGKILLed when the grace period ends",
          "[shim][deadline]") {
  TempDir dir;
  auto marker = unique_marker();
  MarkerCleanup cleanup(marker);
  // `trap "" TERM` ignores TERM in the shell and, through exec, in sleep too.
  auto spec = make_marked_sh_spec(dir, "trap '' TERM; sleep 300 $M; echo survived", marker);
  spec.deadline_seconds = 1.0;
  spec.kill_grace_seconds = 1.0;
  auto shim = launch(spec, dir);
  REQUIRE(eventually([&] { return processes_with_marker(marker).size() == 1; },
                     std::chrono::seconds(5)));

  require_clean_shim_exit(shim.pid);
  auto record = read_exit(spec);
  CHECK(record.reason == ExitReason::Timeout);
  CHECK(record.signal == SIGKILL);
  // Not before deadline + grace, and not much after.
  CHECK(elapsed_ms(record) >= 2000);
  CHECK(elapsed_ms(record) < 2500);
  CHECK(processes_with_marker(marker).empty());
  CHECK(slurp(spec.log_path).find("survived") == std::string::npos);
}

TEST_CASE("what the entry process leaves running is stopped before exit.json appears",
          "[shim]") {
  TempDir dir;
  auto marker = unique_marker();
  MarkerCleanup cleanup(marker);
  // The background child needs 0.3 s to shut down after SIGTERM; the run is not over until then.
  auto spec = make_marked_sh_spec(dir,
                                  "( trap 'sleep 0.3; echo child stopped; exit 0' TERM; "
                                  "while :; do sleep 0.05 $M; done ) & sleep 0.2; exit 7",
                                  marker);
  spec.kill_grace_seconds = 5.0;
  auto shim = launch(spec, dir);

  require_clean_shim_exit(shim.pid);
  auto record = read_exit(spec);
  CHECK(record.reason == ExitReason::Exited);
  CHECK(record.exit_code == 7);
  // (The subshell may also report its SIGTERMed sleep as "Terminated".)
  CHECK_THAT(slurp(spec.log_path), Contains("child stopped\n"));
  CHECK(elapsed_ms(record) >= 500);   // 0.2 s of the entry process + 0.3 s of its child
  CHECK(elapsed_ms(record) < 3000);   // stopped by SIGTERM, not by the SIGKILL 5 s later
  CHECK(processes_with_marker(marker).empty());
}

TEST_CASE("a cancel stops the run and is recorded as Canceled", "[shim][cancel]") {
  TempDir dir;
  auto marker = unique_marker();
  MarkerCleanup cleanup(marker);
  auto spec = make_marked_sh_spec(dir, "sleep 300 $M; echo not reached", marker);
  auto shim = launch(spec, dir);
  wait_for_start(spec);
  REQUIRE(eventually([&] { return processes_with_marker(marker).size() == 1; },
                     std::chrono::seconds(5)));

  SECTION("through request_cancel") {
    REQUIRE(request_cancel(shim).ok());
  }
  SECTION("by SIGINT") {
    REQUIRE(::kill(shim.pid, SIGINT) == 0);
  }

  require_clean_shim_exit(shim.pid);
  auto record = read_exit(spec);
  CHECK(record.reason == ExitReason::Canceled);
  CHECK(record.signal == SIGTERM);
  CHECK(elapsed_ms(record) < 1000);  // no grace period was needed
  CHECK(processes_with_marker(marker).empty());
  CHECK(slurp(spec.log_path).empty());

  // The shim is gone now: a second cancel says so instead of signalling a stranger.
  auto again = request_cancel(shim);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == "ShimNotRunning");
}

TEST_CASE("a cancel sent the moment the shim exists is not lost", "[shim][cancel]") {
  TempDir dir;
  auto marker = unique_marker();
  MarkerCleanup cleanup(marker);
  auto spec = make_marked_sh_spec(dir, "sleep 300 $M", marker);
  auto shim = launch(spec, dir);
  REQUIRE(request_cancel(shim).ok());  // before the shim can have installed its handlers

  require_clean_shim_exit(shim.pid);  // not killed by the SIGTERM itself
  CHECK(read_exit(spec).reason == ExitReason::Canceled);
  CHECK(processes_with_marker(marker).empty());
}

TEST_CASE("SIGHUP does not stop the shim or the run", "[shim]") {
  TempDir dir;
  auto spec = make_sh_spec(dir, "sleep 0.3; echo done; exit 3");
  auto shim = launch(spec, dir);
  wait_for_start(spec);
  REQUIRE(::kill(shim.pid, SIGHUP) == 0);

  require_clean_shim_exit(shim.pid);
  auto record = read_exit(spec);
  CHECK(record.reason == ExitReason::Exited);
  CHECK(record.exit_code == 3);
  CHECK(slurp(spec.log_path) == "done\n");
}

TEST_CASE("the run goes on and exit.json appears when the launching process is SIGKILLed",
          "[shim]") {
  TempDir dir;
  auto spec = make_sh_spec(dir, "sleep 0.5; echo finished; exit 5");
  // The orphaned shim is reparented to the nearest subreaper: make that us for this test, so we
  // can reap it (PID 1 of a container may not).
  struct Subreaper {
    Subreaper() { REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0); }
    ~Subreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 0); }
  } subreaper;

  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  pid_t helper = ::fork();
  REQUIRE(helper >= 0);
  if (helper == 0) {
    // The launching process: start the shim, report its pid, then wait to be killed.
    ::close(pipe_fds[0]);
    auto launched = make_shim_launcher(AMLNODE_SHIM_PATH)
                        ->launch(spec, dir / "launch.json", dir / "shim.log");
    pid_t pid = launched.ok() ? launched->pid : 0;
    ssize_t ignored = ::write(pipe_fds[1], &pid, sizeof pid);
    (void)ignored;
    while (true) ::pause();
  }
  ::close(pipe_fds[1]);
  pid_t shim_pid = 0;
  auto got = ::read(pipe_fds[0], &shim_pid, sizeof shim_pid);
  ::close(pipe_fds[0]);

  REQUIRE(::kill(helper, SIGKILL) == 0);
  int helper_status = 0;
  REQUIRE(::waitpid(helper, &helper_status, 0) == helper);
  CHECK(WIFSIGNALED(helper_status));
  REQUIRE(got == sizeof shim_pid);
  REQUIRE(shim_pid > 0);
  CHECK_FALSE(fs::exists(spec.exit_path));  // the run was still going when its parent died

  require_clean_shim_exit(shim_pid);
  auto record = read_exit(spec);
  CHECK(record.reason == ExitReason::Exited);
  CHECK(record.exit_code == 5);
  CHECK(slurp(spec.log_path) == "finished\n");
}

TEST_CASE("a shim binary that does not exist is a launch error", "[shim]") {
  TempDir dir;
  auto spec = make_spec(dir, {"true"});
  auto launched =
      make_shim_launcher("/nonexistent/amlnode-shim")->launch(spec, dir / "launch.json",
                                                              dir / "shim.log");
  REQUIRE_FALSE(launched.ok());
  CHECK(launched.error().code == "ShimLaunchFailed");
  CHECK_THAT(launched.error().message, Contains("/nonexistent/amlnode-shim"));
}

TEST_CASE("an unreadable launch spec makes the shim exit 2 with the reason", "[shim]") {
  TempDir dir;
  auto run_shim = [&](const fs::path& launch_file) {
    return run_command({AMLNODE_SHIM_PATH, launch_file.string()}, {}, std::chrono::seconds(20));
  };

  SECTION("malformed JSON") {
    auto result = run_shim(dir.write("launch.json", "{\"argv\": [\"true\""));
    CHECK(result.exit_code == 2);
    CHECK_THAT(result.err, Contains("not valid JSON"));
  }
  SECTION("a required field missing") {
    auto result =
        run_shim(dir.write("launch.json", R"({"argv":["true"],"log_path":"l","state_path":"s"})"));
    CHECK(result.exit_code == 2);
    CHECK_THAT(result.err, Contains("exit_path"));
  }
  SECTION("no file at all") {
    auto result = run_shim(dir / "missing.json");
    CHECK(result.exit_code == 2);
    CHECK_THAT(result.err, Contains("missing.json"));
  }
  CHECK_FALSE(fs::exists(dir / "l"));  // nothing was started
}
