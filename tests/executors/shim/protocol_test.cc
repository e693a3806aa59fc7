#include "executors/shim/protocol.h"

#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "executors/shim/launcher.h"
#include "executors/shim/proc.h"

using namespace amlnode::executors;
using Catch::Matchers::Contains;

TEST_CASE("a full launch spec survives a JSON round trip", "[shim][protocol]") {
  LaunchSpec spec;
  spec.argv = {"python3", "train.py", "--lr", "0.1", "quote\"and\\slash", "ünïcode"};
  spec.env = {"PATH=/opt/conda/bin:/usr/bin", "EMPTY=", "MULTI=line1\nline2"};
  spec.cwd = "/runs/r1/wd";
  spec.log_path = "/runs/r1/user_logs/std_log.txt";
  spec.state_path = "/runs/r1/shim.json";
  spec.exit_path = "/runs/r1/exit.json";
  spec.deadline_seconds = 3600.5;
  spec.kill_grace_seconds = 2.5;
  spec.uid = 1000;
  spec.gid = 1001;
  spec.caller_syncs_outcome = true;

  auto back = launch_spec_from_json(launch_spec_to_json(spec));
  REQUIRE(back.ok());
  CHECK(back->argv == spec.argv);
  CHECK(back->env == spec.env);
  CHECK(back->cwd == spec.cwd);
  CHECK(back->log_path == spec.log_path);
  CHECK(back->state_path == spec.state_path);
  CHECK(back->exit_path == spec.exit_path);
  CHECK(back->deadline_seconds == spec.deadline_seconds);
  CHECK(back->kill_grace_seconds == spec.kill_grace_seconds);
  CHECK(back->uid == spec.uid);
  CHECK(back->gid == spec.gid);
  CHECK(back->caller_syncs_outcome);
}

TEST_CASE("a minimal launch spec keeps its optional fields empty", "[shim][protocol]") {
  LaunchSpec spec;
  spec.argv = {"true"};
  spec.log_path = "log";
  spec.state_path = "state";
  spec.exit_path = "exit";

  auto back = launch_spec_from_json(launch_spec_to_json(spec));
  REQUIRE(back.ok());
  CHECK(back->argv == spec.argv);
  CHECK(back->env.empty());
  CHECK(back->cwd.empty());
  CHECK_FALSE(back->deadline_seconds);
  CHECK(back->kill_grace_seconds == 10.0);
  CHECK_FALSE(back->uid);
  CHECK_FALSE(back->gid);
  CHECK_FALSE(back->caller_syncs_outcome);  // exit.json is synced unless the caller says otherwise

  // A hand-written file may use null for "not set".
  auto nulls =
      launch_spec_from_json(R"({"argv":["true"],"log_path":"l","state_path":"s","exit_path":"e",)"
                            R"("deadline_seconds":null,"uid":null})");
  REQUIRE(nulls.ok());
  CHECK_FALSE(nulls->deadline_seconds);
  CHECK_FALSE(nulls->uid);
}

TEST_CASE("launch spec errors name the field at fault", "[shim][protocol]") {
  auto error_of = [](const std::string& text) {
    auto spec = launch_spec_from_json(text);
    REQUIRE_FALSE(spec.ok());
    CHECK(spec.error().code == "InvalidLaunchSpec");
    return spec.error().message;
  };
  const std::string files = R"("log_path":"l","state_path":"s","exit_path":"e")";
  CHECK_THAT(error_of("{not json"), Contains("not valid JSON"));
  CHECK_THAT(error_of("[1,2]"), Contains("JSON object"));
  CHECK_THAT(error_of("{" + files + "}"), Contains("'argv'"));
  CHECK_THAT(error_of(R"({"argv":[],)" + files + "}"), Contains("'argv'"));
  CHECK_THAT(error_of(R"({"argv":["a",3],)" + files + "}"), Contains("'argv[1]'"));
  CHECK_THAT(error_of(R"({"argv":["a"],"log_path":"l","state_path":"s"})"),
             Contains("'exit_path'"));
  CHECK_THAT(error_of(R"({"argv":["a"],"deadline_seconds":"soon",)" + files + "}"),
             Contains("'deadline_seconds'"));
  CHECK_THAT(error_of(R"({"argv":["a"],"kill_grace_seconds":-1,)" + files + "}"),
             Contains("'kill_grace_seconds'"));
  CHECK_THAT(error_of(R"({"argv":["a"],"uid":-5,)" + files + "}"), Contains("'uid'"));
  CHECK_THAT(error_of(R"({"argv":["a"],"env":"A=1",)" + files + "}"), Contains("'env'"));
  CHECK_THAT(error_of(R"({"argv":["a"],"caller_syncs_outcome":"yes",)" + files + "}"),
             Contains("'caller_syncs_outcome' must be true or false"));
}

TEST_CASE("shim state survives a JSON round trip", "[shim][protocol]") {
  ShimState state{4242, 123456789012ULL, 4243, 1760000000123LL};
  auto back = shim_state_from_json(shim_state_to_json(state));
  REQUIRE(back.ok());
  CHECK(back->shim_pid == 4242);
  CHECK(back->shim_start_time == 123456789012ULL);
  CHECK(back->child_pid == 4243);
  CHECK(back->started_at_ms == 1760000000123LL);

  auto missing = shim_state_from_json(R"({"shim_pid":1})");
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(missing.error().message, Contains("shim_start_time"));
}

TEST_CASE("exit records survive a JSON round trip for every reason", "[shim][protocol]") {
  ExitRecord exited{ExitReason::Exited, 3, std::nullopt, 1000, 2000, "", {}, std::nullopt};
  ExitRecord signaled{ExitReason::Signaled, std::nullopt, 11, 1000, 2000, "", {}, std::nullopt};
  ExitRecord timeout{ExitReason::Timeout, std::nullopt, 9, 1000, 2000, "", {}, std::nullopt};
  ExitRecord canceled{ExitReason::Canceled, 143, std::nullopt, 1000, 2000, "", {}, std::nullopt};
  ExitRecord failed{ExitReason::SpawnFailed,
                    std::nullopt,
                    std::nullopt,
                    1000,
                    1000,
                    "cannot start python3: No such file or directory",
                    {},
                    std::nullopt};
  // A run of several ranks: each rank's end and the first that failed.
  ExitRecord ranks{ExitReason::Exited,
                   3,
                   std::nullopt,
                   1000,
                   2000,
                   "",
                   {{2, 3, std::nullopt, 1500}, {0, std::nullopt, 15, 1600}},
                   2};
  for (const auto& record : {exited, signaled, timeout, canceled, failed, ranks}) {
    auto back = exit_record_from_json(exit_record_to_json(record));
    REQUIRE(back.ok());
    CHECK(back->reason == record.reason);
    CHECK(back->exit_code == record.exit_code);
    CHECK(back->signal == record.signal);
    CHECK(back->started_at_ms == record.started_at_ms);
    CHECK(back->ended_at_ms == record.ended_at_ms);
    CHECK(back->error == record.error);
    CHECK(back->failed_rank == record.failed_rank);
    REQUIRE(back->ranks.size() == record.ranks.size());
    for (std::size_t i = 0; i < record.ranks.size(); ++i) {
      CHECK(back->ranks[i].rank == record.ranks[i].rank);
      CHECK(back->ranks[i].exit_code == record.ranks[i].exit_code);
      CHECK(back->ranks[i].signal == record.ranks[i].signal);
      CHECK(back->ranks[i].ended_at_ms == record.ranks[i].ended_at_ms);
    }
  }
  CHECK(to_string(ExitReason::SpawnFailed) == "SpawnFailed");

  auto unknown = exit_record_from_json(R"({"reason":"Exploded"})");
  REQUIRE_FALSE(unknown.ok());
  CHECK_THAT(unknown.error().message, Contains("'reason'"));
}

TEST_CASE("/proc/<pid>/stat is parsed past odd command names", "[shim][proc]") {
  // The command name may contain spaces and ')' itself; fields are counted after the last ')'.
  const char* text =
      "4321 (evil) name (x)) S 77 4321 4321 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 "
      "987654 1000 100 18446744073709551615";
  auto stat = proc::parse_stat(text, std::strlen(text));
  REQUIRE(stat);
  CHECK(stat->pid == 4321);
  CHECK(stat->state == 'S');
  CHECK(stat->ppid == 77);
  CHECK(stat->start_time == 987654);

  CHECK_FALSE(proc::parse_stat("12 (truncated) S 1 2", 20));
}

TEST_CASE("a process is recognised by pid and start time together", "[shim][proc]") {
  auto mine = process_start_time(::getpid());
  REQUIRE(mine);
  CHECK(is_same_process(::getpid(), *mine));
  CHECK_FALSE(is_same_process(::getpid(), *mine + 1));

  // A pid that no longer exists: a child we have already reaped.
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  REQUIRE(child > 0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK_FALSE(process_start_time(child));
  CHECK_FALSE(is_same_process(child, *mine));
  CHECK_FALSE(request_cancel(LaunchedShim{child, *mine}).ok());
}
