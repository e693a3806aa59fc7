// Lost nodes, requeues and stale epochs, with a manual clock instead of waiting.

#include <catch2/catch.hpp>
#include <thread>

#include "tests/controlplane/cp_test_support.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode::controlplane;
using namespace amlnode::controlplane::test;
using namespace std::chrono_literals;

namespace {

// Only `alive` heartbeats while the heartbeat timeout (30 s) passes; the sweep then finds every
// other node lost and requeues its runs.
void outlast_the_others(TestServer& server, NodeClient& alive) {
  server.clock().advance(20s);
  REQUIRE(alive.heartbeat().status == 200);
  server.clock().advance(11s);
  server.server().sweep_now();
}

}  // namespace

TEST_CASE("a lost node's run is requeued with a new epoch and the old epoch is stopped",
          "[epoch]") {
  TestServer server;
  auto a = server.node("cpu");
  auto b = server.node("cpu");
  auto run_id = server.queue_run("cpu");
  REQUIRE(a.lease().json()["runs"][0]["epoch"] == 1);
  REQUIRE(a.status(run_id, 1, "Running").json()["status"] == "Running");
  REQUIRE(a.append(run_id, "user_logs/std_log.txt", 0, 1, "epoch one\n").status == 200);

  // b keeps heartbeating; a falls silent past the timeout.
  outlast_the_others(server, b);

  auto record = server.run(run_id);
  CHECK(record["status"] == "Queued");
  CHECK(record["node_id"].is_null());
  auto nodes = server.user().get("/v1/nodes", server.user_token()).json();
  for (const auto& node : nodes) {
    if (node["nodeId"] == a.id()) CHECK(node["nodeState"] == "unusable");
    if (node["nodeId"] == b.id()) CHECK(node["nodeState"] == "idle");
  }

  auto leased = b.lease().json()["runs"];
  REQUIRE(leased.size() == 1);
  CHECK(leased[0]["run_id"] == run_id);
  CHECK(leased[0]["epoch"] == 2);
  REQUIRE(b.status(run_id, 2, "Running").status == 200);

  // The old holder comes back: every report with its epoch is a 409 that says stop.
  auto status = a.status(run_id, 1, "Completed");
  CHECK(status.status == 409);
  CHECK(status.json()["error"]["code"] == "StaleEpoch");
  CHECK(status.json()["stop"] == true);
  auto log = a.append(run_id, "user_logs/std_log.txt", 10, 1, "late\n");
  CHECK(log.status == 409);
  CHECK(log.json()["stop"] == true);
  auto heartbeat =
      a.heartbeat({{"state", "running"},
                   {"runs", {{{"run_id", run_id}, {"epoch", 1}, {"status", "Running"}}}}});
  REQUIRE(heartbeat.status == 200);
  CHECK(heartbeat.json()["commands"] ==
        nlohmann::json::array(
            {{{"type", "stop"}, {"run_id", run_id}, {"reason", "lease moved to another node"}}}));
  // Even with the current epoch number, a node that no longer holds the run is stale.
  CHECK(a.status(run_id, 2, "Completed").status == 409);

  CHECK(server.run(run_id)["status"] == "Running");
  // The restarted run's log starts again at 0, as its file on the new node does.
  CHECK(b.append(run_id, "user_logs/std_log.txt", 0, 2, "epoch two\n").json()["length"] == 10);
}

TEST_CASE("a run taken from a cut-off node goes back to it only once that node has let go of it",
          "[epoch]") {
  TestServer server;
  auto a = server.node("cpu");
  auto run_id = server.queue_run("cpu");
  REQUIRE(a.lease().json()["runs"][0]["epoch"] == 1);
  REQUIRE(a.status(run_id, 1, "Running").status == 200);

  // a falls silent past the timeout; its run is requeued, and a is the only node there is.
  server.clock().advance(31s);
  server.server().sweep_now();
  REQUIRE(server.run(run_id)["status"] == "Queued");

  // a is back, still running epoch 1: it is told to stop, and is not handed epoch 2 meanwhile,
  // which would meet the old process in the same run folder.
  const nlohmann::json holding = {
      {"state", "running"}, {"runs", {{{"run_id", run_id}, {"epoch", 1}, {"status", "Running"}}}}};
  auto answer = a.heartbeat(holding);
  REQUIRE(answer.status == 200);
  CHECK(answer.json()["commands"][0]["type"] == "stop");
  CHECK(a.lease().json()["runs"].empty());
  CHECK(a.heartbeat(holding).status == 200);
  CHECK(a.lease().json()["runs"].empty());

  // Another node would get it at once.
  SECTION("another node leases it") {
    auto b = server.node("cpu");
    CHECK(b.lease().json()["runs"][0]["epoch"] == 2);
  }
  // Once a's heartbeat no longer lists it, a may lease it again, and a waiting lease is served.
  SECTION("the node that let go leases it again") {
    auto [status, leased] = std::pair{0, nlohmann::json()};
    // The node's lease poll and its heartbeat go over connections of their own, as the agent's do.
    NodeClient poller(server.port(), {a.id(), a.token()});
    std::thread poll([&] {
      auto response = poller.lease(1, 10);
      status = response.status;
      leased = response.json();
    });
    std::this_thread::sleep_for(200ms);
    CHECK(a.heartbeat({{"state", "idle"}}).status == 200);
    poll.join();
    REQUIRE(status == 200);
    REQUIRE(leased["runs"].size() == 1);
    CHECK(leased["runs"][0]["run_id"] == run_id);
    CHECK(leased["runs"][0]["epoch"] == 2);
  }
}

namespace {

std::string read_log(TestServer& server, const std::string& run_id, const std::string& query) {
  auto response = server.user().get(
      "/v1/runs/" + run_id + "/logs/user_logs/std_log.txt?offset=0" + query, server.user_token());
  REQUIRE(response.status == 200);
  return response.body;
}

}  // namespace

TEST_CASE("a requeued run's new attempt logs from 0 and the earlier attempt stays readable",
          "[epoch]") {
  TestServer server;
  auto a = server.node("cpu");
  auto b = server.node("cpu");
  auto run_id = server.queue_run("cpu");
  REQUIRE(a.lease().json()["runs"][0]["epoch"] == 1);
  REQUIRE(a.status(run_id, 1, "Running").status == 200);
  REQUIRE(a.append(run_id, "user_logs/std_log.txt", 0, 1, "line 1\nline 2\nline 3\n").status ==
          200);
  REQUIRE(a.append(run_id, "system_logs/lifecycle.txt", 0, 1, "leased on a\n").status == 200);

  outlast_the_others(server, b);
  REQUIRE(b.lease().json()["runs"][0]["epoch"] == 2);

  // b's file starts at 0; so does the stream it appends to, so nothing is skipped as "had".
  auto first = b.append(run_id, "user_logs/std_log.txt", 0, 2, "line 1\n");
  CHECK(first.json()["length"] == 7);
  CHECK(b.append(run_id, "user_logs/std_log.txt", 7, 2, "line 2\n").json()["length"] == 14);
  CHECK(read_log(server, run_id, "") == "line 1\nline 2\n");
  CHECK(read_log(server, run_id, "&attempt=2") == "line 1\nline 2\n");
  CHECK(read_log(server, run_id, "&attempt=1") == "line 1\nline 2\nline 3\n");

  auto listing = server.user().get("/v1/runs/" + run_id + "/logs", server.user_token()).json();
  CHECK(listing["attempt"] == 2);
  CHECK(listing["attempts"] == 2);
  CHECK(listing["streams"] == nlohmann::json{{"user_logs/std_log.txt", 14}});
  auto earlier =
      server.user().get("/v1/runs/" + run_id + "/logs?attempt=1", server.user_token()).json();
  CHECK(earlier["streams"] ==
        nlohmann::json{{"system_logs/lifecycle.txt", 12}, {"user_logs/std_log.txt", 21}});
  auto read = server.user().get("/v1/runs/" + run_id + "/logs/user_logs/std_log.txt?offset=0",
                                server.user_token());
  CHECK(read.header("x-amlnode-attempt") == "2");
  auto missing = server.user().get("/v1/runs/" + run_id + "/logs/user_logs/std_log.txt?attempt=3",
                                   server.user_token());
  CHECK(missing.status == 404);
  CHECK(missing.json()["error"]["message"].get<std::string>().rfind("attempt", 0) == 0);

  SECTION("attempts survive a restart, and the run's later attempts number on") {
    server.restart();
    CHECK(read_log(server, run_id, "&attempt=1") == "line 1\nline 2\nline 3\n");
    CHECK(read_log(server, run_id, "") == "line 1\nline 2\n");
  }
  SECTION("a lease that was never used is not an attempt") {
    auto c = server.node("cpu");
    outlast_the_others(server, c);
    REQUIRE(c.lease().json()["runs"][0]["epoch"] == 3);
    // b's attempt had bytes, so it is attempt 2 now; c starts attempt 3 from 0.
    CHECK(read_log(server, run_id, "&attempt=2") == "line 1\nline 2\n");
    CHECK(read_log(server, run_id, "") == "");
    server.clock().advance(20s);
    auto d = server.node("cpu");
    server.clock().advance(11s);
    server.server().sweep_now();
    REQUIRE(d.lease().json()["runs"][0]["epoch"] == 4);
    auto listed = server.user().get("/v1/runs/" + run_id + "/logs", server.user_token()).json();
    CHECK(listed["attempt"] == 3);
  }
}

TEST_CASE("with a requeue delay a lost node's runs show NotResponding first", "[epoch]") {
  TestServer server([](ServerOptions& options) { options.requeue_delay = 60s; });
  auto a = server.node("cpu");
  auto run_id = server.queue_run("cpu");
  REQUIRE(a.lease().json()["runs"].size() == 1);
  REQUIRE(a.status(run_id, 1, "Running").status == 200);

  server.clock().advance(31s);
  server.server().sweep_now();
  CHECK(server.run(run_id)["status"] == "NotResponding");

  SECTION("the node comes back in time and the run goes on") {
    REQUIRE(a.heartbeat({{"state", "running"}}).status == 200);
    CHECK(a.status(run_id, 1, "Running").json()["status"] == "Running");
    for (int i = 0; i < 13; ++i) {
      server.clock().advance(5s);
      REQUIRE(a.heartbeat({{"state", "running"}}).status == 200);
      server.server().sweep_now();
    }
    CHECK(server.run(run_id)["status"] == "Running");
  }
  SECTION("after the delay the run is queued again") {
    server.clock().advance(61s);
    server.server().sweep_now();
    CHECK(server.run(run_id)["status"] == "Queued");
  }
}

TEST_CASE("a cancel requested on a run whose node is lost ends as Canceled", "[epoch]") {
  TestServer server;
  auto a = server.node("cpu");
  auto run_id = server.queue_run("cpu");
  REQUIRE(a.lease().json()["runs"].size() == 1);
  REQUIRE(a.status(run_id, 1, "Running").status == 200);
  auto cancel = server.user().post("/v1/runs/" + run_id + "/cancel", server.user_token(), {});
  REQUIRE(cancel.json()["status"] == "CancelRequested");
  server.clock().advance(31s);
  server.server().sweep_now();
  auto record = server.run(run_id);
  CHECK(record["status"] == "Canceled");
  CHECK_FALSE(record["end_time_utc"].is_null());
}

TEST_CASE("heartbeats keep a node alive", "[epoch]") {
  TestServer server;
  auto a = server.node("cpu");
  auto run_id = server.queue_run("cpu");
  REQUIRE(a.lease().json()["runs"].size() == 1);
  for (int i = 0; i < 10; ++i) {
    server.clock().advance(5s);
    REQUIRE(a.heartbeat({{"state", "running"}}).status == 200);
    server.server().sweep_now();
  }
  CHECK(server.run(run_id)["node_id"] == a.id());
}

TEST_CASE(
    "amlnode logs --follow starts over when the run starts again, and --attempt reads "
    "the earlier attempt",
    "[epoch]") {
  TestServer server;
  auto a = server.node("cpu");
  auto b = server.node("cpu");
  auto run_id = server.queue_run("cpu");
  REQUIRE(a.lease().json()["runs"][0]["epoch"] == 1);
  REQUIRE(a.status(run_id, 1, "Running").status == 200);
  REQUIRE(a.append(run_id, "user_logs/std_log.txt", 0, 1, "a 1\na 2\n").status == 200);

  amlnode::test::TempDir dir;
  const std::vector<std::string> env{
      "AMLNODE_CONTROL_PLANE=http://127.0.0.1:" + std::to_string(server.port()),
      "AMLNODE_USER_TOKEN=" + server.user_token()};
  auto amlnode = amlnode::test::amlnode_binary().string();
  pid_t follower = amlnode::test::start_command({amlnode, "logs", run_id, "--follow"}, dir / "out",
                                                dir / "err", env);
  auto printed = [&] { return amlnode::test::slurp(dir / "out"); };
  REQUIRE(amlnode::test::eventually([&] { return printed() == "a 1\na 2\n"; }, 20s));

  // a is cut off; b leases the run again and its process writes its log from the start.
  outlast_the_others(server, b);
  REQUIRE(b.lease().json()["runs"][0]["epoch"] == 2);
  REQUIRE(b.status(run_id, 2, "Running").status == 200);
  REQUIRE(b.append(run_id, "user_logs/std_log.txt", 0, 2, "b 1\n").status == 200);
  REQUIRE(amlnode::test::eventually([&] { return printed() == "a 1\na 2\nb 1\n"; }, 20s));
  REQUIRE(b.append(run_id, "user_logs/std_log.txt", 4, 2, "b 2\nb 3\n").status == 200);
  REQUIRE(b.status(run_id, 2, "Completed").status == 200);

  CHECK(amlnode::test::wait_command(follower, 60s) == 0);
  CHECK(printed() == "a 1\na 2\nb 1\nb 2\nb 3\n");
  CHECK(amlnode::test::slurp(dir / "err").find("started again (attempt 2)") != std::string::npos);

  auto earlier = amlnode::test::run_command({amlnode, "logs", run_id, "--attempt", "1"}, env, 30s);
  CHECK(earlier.exit_code == 0);
  CHECK(earlier.out == "a 1\na 2\n");
  auto current = amlnode::test::run_command({amlnode, "logs", run_id}, env, 30s);
  CHECK(current.out == "b 1\nb 2\nb 3\n");
}
