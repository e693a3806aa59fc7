// Leases: FIFO per compute name, long polls, epochs, and what a node may touch.

#include <catch2/catch.hpp>
#include <future>
#include <set>
#include <thread>

#include "tests/controlplane/cp_test_support.h"

using namespace amlnode::controlplane;
using namespace amlnode::controlplane::test;
using Seconds = std::chrono::duration<double>;

TEST_CASE("leases are first in, first out per compute name", "[lease]") {
  TestServer server;
  auto cpu_node = server.node("cpu");
  auto gpu_node = server.node("gpu");
  auto first = server.queue_run("cpu");
  auto gpu_run = server.queue_run("gpu");
  auto second = server.queue_run("cpu");
  auto third = server.queue_run("cpu");

  auto leased = cpu_node.lease(2).json()["runs"];
  REQUIRE(leased.size() == 2);
  CHECK(leased[0]["run_id"] == first);
  CHECK(leased[1]["run_id"] == second);
  CHECK(leased[0]["epoch"] == 1);
  CHECK(leased[0]["experiment_name"] == "exp");
  CHECK(leased[0]["job"]["text"] == "entry_script: train.py\n");
  CHECK(leased[0]["job"]["file_name"] == "job.yml");

  auto gpu = gpu_node.lease(5).json()["runs"];
  REQUIRE(gpu.size() == 1);
  CHECK(gpu[0]["run_id"] == gpu_run);

  auto rest = cpu_node.lease(5).json()["runs"];
  REQUIRE(rest.size() == 1);
  CHECK(rest[0]["run_id"] == third);
  CHECK(cpu_node.lease(5).json()["runs"].empty());

  auto record = server.run(first);
  CHECK(record["node_id"] == cpu_node.id());
  CHECK(record["epoch"] == 1);
}

TEST_CASE("a run without its snapshot is not leased", "[lease]") {
  TestServer server;
  auto node = server.node("cpu");
  auto run_id = server.submit_run("cpu");
  CHECK(server.run(run_id)["status"] == "NotStarted");
  CHECK(node.lease().json()["runs"].empty());
}

TEST_CASE("a long-poll lease returns as soon as a run is queued", "[lease]") {
  TestServer server;
  auto node = server.node("cpu");
  auto started = std::chrono::steady_clock::now();
  auto waiting = std::async(std::launch::async, [&] { return node.lease(1, 20); });
  // Give the lease time to reach the server and start waiting.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto run_id = server.queue_run("cpu");
  REQUIRE(waiting.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  auto leased = waiting.get();
  CHECK(Seconds(std::chrono::steady_clock::now() - started).count() < 5);
  REQUIRE(leased.json()["runs"].size() == 1);
  CHECK(leased.json()["runs"][0]["run_id"] == run_id);
}

TEST_CASE("a long-poll lease with nothing queued answers empty after its wait", "[lease]") {
  TestServer server;
  auto node = server.node("cpu");
  server.queue_run("gpu");  // another compute's work does not wake it
  auto started = std::chrono::steady_clock::now();
  auto leased = node.lease(1, 0.5);
  double took = Seconds(std::chrono::steady_clock::now() - started).count();
  CHECK(leased.status == 200);
  CHECK(leased.json()["runs"].empty());
  CHECK(took >= 0.45);
  CHECK(took < 3);
}

TEST_CASE("waiting nodes are served in the order they asked", "[lease]") {
  TestServer server;
  auto a = server.node("cpu");
  auto b = server.node("cpu");
  auto first = std::async(std::launch::async, [&] { return a.lease(1, 20); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto second = std::async(std::launch::async, [&] { return b.lease(1, 20); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto run1 = server.queue_run("cpu");
  auto run2 = server.queue_run("cpu");
  CHECK(first.get().json()["runs"][0]["run_id"] == run1);
  CHECK(second.get().json()["runs"][0]["run_id"] == run2);
}

TEST_CASE("a node gets 403 on a run leased to another node", "[lease]") {
  TestServer server;
  auto a = server.node("cpu");
  auto b = server.node("cpu");
  auto run_id = server.queue_run("cpu");
  REQUIRE(a.lease().json()["runs"].size() == 1);

  CHECK(b.status(run_id, 1, "Running").status == 403);
  CHECK(b.append(run_id, "user_logs/std_log.txt", 0, 1, "x").status == 403);
  CHECK(b.http().get("/v1/runs/" + run_id, b.token()).status == 403);
  CHECK(b.http().request("GET", "/v1/runs/" + run_id + "/snapshot", b.token()).status == 403);
  // The holder can read its run and the snapshot.
  CHECK(a.http().get("/v1/runs/" + run_id, a.token()).status == 200);
  auto snapshot = a.http().request("GET", "/v1/runs/" + run_id + "/snapshot", a.token(), "",
                                   {{"X-Amlnode-Epoch", "1"}});
  CHECK(snapshot.status == 200);
  CHECK(snapshot.header("content-type") == "application/gzip");
  CHECK(snapshot.body == std::string("\x1f\x8b snapshot of ") + run_id);
  CHECK(b.status("no-such-run", 1, "Running").status == 404);
}

TEST_CASE("a snapshot is uploaded once", "[lease]") {
  TestServer server;
  auto run_id = server.queue_run("cpu");
  auto again =
      server.user().request("PUT", "/v1/runs/" + run_id + "/snapshot", server.user_token(), "x");
  CHECK(again.status == 409);
}

namespace {

// A run across `node_count` nodes of compute cpu, submitted with its node_count.
std::string submit_gang(TestServer& server, int node_count) {
  auto created =
      server.user().post("/v1/runs", server.user_token(),
                         {{"job", {{"text", "entry_script: train.py\n"}, {"file_name", "job.yml"}}},
                          {"experiment_name", "exp"},
                          {"compute_name", "cpu"},
                          {"node_count", node_count}});
  REQUIRE(created.status == 201);
  return created.json()["run_id"];
}

// Its snapshot uploaded: the run joins the queue.
void queue_gang(TestServer& server, const std::string& run_id) {
  REQUIRE(server.user()
              .request("PUT", "/v1/runs/" + run_id + "/snapshot", server.user_token(),
                       std::string("\x1f\x8b snapshot"))
              .status == 200);
}

}  // namespace

TEST_CASE("a run across nodes reaches a waiting node's long poll as its share", "[lease][gang]") {
  TestServer server;
  auto a = server.node("cpu");
  auto b = server.node("cpu");
  std::string run_id = submit_gang(server, 2);
  auto waiting = std::async(std::launch::async, [&] { return a.lease(1, 20); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  queue_gang(server, run_id);
  // Whichever node's lease call places the gang, both get their share at once.
  auto leased_b = b.lease(1, 20).json()["runs"];
  REQUIRE(waiting.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  auto leased_a = waiting.get().json()["runs"];
  REQUIRE(leased_a.size() == 1);
  REQUIRE(leased_b.size() == 1);
  CHECK(leased_a[0]["run_id"] == run_id);
  CHECK(leased_b[0]["run_id"] == run_id);
  CHECK(leased_a[0]["epoch"] == leased_b[0]["epoch"]);
  std::set<int> ranks{leased_a[0]["share"]["node_rank"].get<int>(),
                      leased_b[0]["share"]["node_rank"].get<int>()};
  CHECK(ranks == std::set<int>{0, 1});
  CHECK(leased_a[0]["share"]["nodes"] == leased_b[0]["share"]["nodes"]);
  auto record = server.run(run_id);
  CHECK(record["node_count"] == 2);
  CHECK(record["shares"].size() == 2);

  // A node_count the control plane cannot take is refused, naming the field.
  auto refused = server.user().post("/v1/runs", server.user_token(),
                                    {{"job", {{"text", "x: 1\n"}}},
                                     {"experiment_name", "exp"},
                                     {"compute_name", "cpu"},
                                     {"node_count", 0}});
  CHECK(refused.status == 400);
  CHECK_THAT(refused.body, Catch::Contains("node_count"));
}

TEST_CASE("shares wait at a gang's barrier until the last one is prepared", "[lease][gang]") {
  TestServer server;
  auto a = server.node("cpu");
  auto b = server.node("cpu");
  std::string run_id = submit_gang(server, 2);
  queue_gang(server, run_id);
  auto leased = a.http().post("/v1/nodes/" + a.id() + "/lease", a.token(),
                              {{"max_runs", 1}, {"rendezvous_port", 29612}});
  REQUIRE(leased.status == 200);
  CHECK(leased.json()["runs"][0]["share"]["master_port"] == 29612);
  std::int64_t epoch = leased.json()["runs"][0]["epoch"];
  REQUIRE(b.lease(1).json()["runs"].size() == 1);
  auto barrier = [&](NodeClient& node, double wait) {
    return node.http().post("/v1/runs/" + run_id + "/barrier", node.token(),
                            {{"epoch", epoch}, {"wait_seconds", wait}});
  };
  CHECK(barrier(a, 0).json()["open"] == false);
  auto waiting = std::async(std::launch::async, [&] { return barrier(a, 20); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(barrier(b, 20).json()["open"] == true);
  REQUIRE(waiting.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(waiting.get().json()["open"] == true);
  // Another epoch's share, or a node that holds none, is refused as a status report would be.
  CHECK(
      b.http().post("/v1/runs/" + run_id + "/barrier", b.token(), {{"epoch", epoch + 1}}).status ==
      409);
  auto c = server.node("cpu");
  CHECK(barrier(c, 0).status == 403);
}
