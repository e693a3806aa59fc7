// The Cluster's rules without HTTP, and the SQLite store under them.

#include "controlplane/cluster.h"

#include <catch2/catch.hpp>

#include "controlplane/request_bodies.h"
#include "controlplane/store.h"
#include "tests/controlplane/cp_test_support.h"
#include "tests/support/temp_dir.h"

using namespace amlnode::controlplane;
using namespace amlnode::controlplane::test;
using namespace std::chrono_literals;
using amlnode::spec::RunStatus;

namespace {

struct Fixture {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  Cluster cluster{StoreContents{}, clock, ClusterPolicy{}, "user"};

  std::string node(const std::string& compute, const std::string& ip = "") {
    auto token = cluster.create_registration_token(compute);
    auto caller = cluster.identify(token);
    REQUIRE(caller.kind == CallerKind::Registration);
    NodeRegistration registration;
    registration.hostname = "host";
    if (!ip.empty()) registration.ips = {ip};
    auto registered = cluster.register_node(caller.token_hash, registration);
    REQUIRE(registered.ok());
    return registered->node_id;
  }

  std::string queued_run(const std::string& compute) {
    auto run = cluster.submit_run(SubmitRequest{"x: 1", "job.yml", "exp", compute});
    REQUIRE(run.ok());
    REQUIRE(cluster.queue_run(run->run_id).ok());
    return run->run_id;
  }
};

}  // namespace

TEST_CASE("a requeued run keeps its place in the queue", "[cluster]") {
  Fixture f;
  auto a = f.node("cpu");
  auto b = f.node("cpu");
  auto first = f.queued_run("cpu");
  REQUIRE(f.cluster.lease(a, 1).at(0).run_id == first);
  auto second = f.queued_run("cpu");
  f.clock->advance(31s);
  f.cluster.touch(b);
  auto outcome = f.cluster.sweep();
  CHECK(outcome.computes_with_queued_runs == std::set<std::string>{"cpu"});
  auto leased = f.cluster.lease(b, 2);
  REQUIRE(leased.size() == 2);
  CHECK(leased[0].run_id == first);
  CHECK(leased[0].epoch == 2);
  CHECK(leased[1].run_id == second);
}

TEST_CASE("an undelivered lease goes back to the queue, its epoch spent", "[cluster]") {
  Fixture f;
  auto a = f.node("cpu");
  auto run = f.queued_run("cpu");
  auto leased = f.cluster.lease(a, 1);
  REQUIRE(f.cluster.return_lease(a, leased));
  Caller caller{CallerKind::Node, a, ""};
  CHECK(f.cluster.run_for_writer(caller, run, 1).error().code == kStaleEpoch);
  CHECK(f.cluster.lease(a, 1).at(0).epoch == 2);
}

TEST_CASE("every change becomes a store operation", "[cluster]") {
  Fixture f;
  f.cluster.take_changes();
  auto a = f.node("cpu");
  CHECK(f.cluster.take_changes().size() == 3);  // token made, token spent, node
  CHECK(f.cluster.heartbeat(a, HeartbeatReport{"idle", "", {}}).commands.empty());
  CHECK(f.cluster.take_changes().empty());  // nothing changed
  f.cluster.heartbeat(a, HeartbeatReport{"running", "", {}});
  CHECK(f.cluster.take_changes().size() == 1);
}

TEST_CASE("the SQLite store gives back what it was given", "[cluster]") {
  amlnode::test::TempDir dir;
  auto path = (dir / "cp.db").string();
  {
    auto store = open_sqlite_store(path);
    REQUIRE(store.ok());
    Store& s = **store;
    REQUIRE(s.begin().ok());
    NodeRecord node;
    node.node_id = "node-1";
    node.token_hash = "hash";
    node.compute_name = "cpu";
    node.ips = {"10.0.0.4", "10.0.0.5"};
    node.labels = {{"vm_size", "D2"}};
    node.lost = true;
    REQUIRE(s.put_node(node).ok());
    RunRecord run;
    run.run_id = "exp_1_abc";
    run.status = RunStatus::Running;
    run.epoch = 3;
    run.exit_code = 7;
    run.error = {{"code", "E"}};
    REQUIRE(s.put_run(run).ok());
    REQUIRE(s.put_job_text(run.run_id, "entry_script: x.py").ok());
    run.epoch = 4;  // a later update must not lose the job text
    REQUIRE(s.put_run(run).ok());
    REQUIRE(s.put_lease(LeaseRecord{run.run_id, 4, "node-1", 99}).ok());
    REQUIRE(s.commit().ok());
  }
  auto store = open_sqlite_store(path);
  REQUIRE(store.ok());
  auto contents = (*store)->load();
  REQUIRE(contents.ok());
  REQUIRE(contents->nodes.size() == 1);
  CHECK(contents->nodes[0].ips == std::vector<std::string>{"10.0.0.4", "10.0.0.5"});
  CHECK(contents->nodes[0].labels["vm_size"] == "D2");
  CHECK(contents->nodes[0].lost);
  REQUIRE(contents->runs.size() == 1);
  CHECK(contents->runs[0].epoch == 4);
  CHECK(contents->runs[0].exit_code == 7);
  CHECK(contents->runs[0].status == RunStatus::Running);
  CHECK(contents->live_job_texts.at("exp_1_abc") == "entry_script: x.py");
  CHECK(contents->leases.size() == 1);
}

TEST_CASE("request bodies name the field that is wrong", "[cluster]") {
  auto message = [](auto result) {
    return result.ok() ? std::string("ok") : result.error().message;
  };
  CHECK(message(parse_heartbeat(
                    R"({"runs": [{"run_id": "a", "epoch": 1}, {"run_id": "b", "epoch": -1}]})"))
            .rfind("runs[1].epoch:", 0) == 0);
  CHECK(message(parse_heartbeat(R"({"state": "asleep"})")).rfind("state:", 0) == 0);
  CHECK(message(parse_lease(R"({"max_runs": 0})", Limits{})).rfind("max_runs:", 0) == 0);
  auto capped = parse_lease(R"({"wait_seconds": 3600})", Limits{});
  REQUIRE(capped.ok());
  CHECK(capped->wait_seconds == 60);
  CHECK(message(parse_status(R"({"epoch": 1, "status": "Running", "timings": []})"))
            .rfind("timings:", 0) == 0);
  CHECK(message(parse_registration(R"({"hostname": "h", "labels": {"a": 1}})"))
            .rfind("labels.a:", 0) == 0);
  CHECK(message(parse_submit(R"({"job": {"text": "x"}, "experiment_name": "e"})", 100))
            .rfind("compute_name:", 0) == 0);
}

TEST_CASE("runs are listed newest first, live ones or one compute's on request", "[cluster]") {
  Fixture f;
  auto old_cpu = f.queued_run("cpu");
  f.clock->advance(1s);
  auto gpu = f.queued_run("gpu");
  f.clock->advance(1s);
  auto new_cpu = f.queued_run("cpu");
  f.cluster.cancel(old_cpu);

  auto ids = [](const nlohmann::json& runs) {
    std::vector<std::string> out;
    for (const auto& run : runs) out.push_back(run["run_id"]);
    return out;
  };
  CHECK(ids(f.cluster.list_runs({})) == std::vector<std::string>{new_cpu, gpu, old_cpu});
  CHECK(ids(f.cluster.list_runs({true, "", 100})) == std::vector<std::string>{new_cpu, gpu});
  CHECK(ids(f.cluster.list_runs({false, "cpu", 100})) ==
        std::vector<std::string>{new_cpu, old_cpu});
  CHECK(ids(f.cluster.list_runs({false, "", 1})) == std::vector<std::string>{new_cpu});
  CHECK(f.cluster.list_runs({false, "tpu", 100}).empty());
}

TEST_CASE("a node whose lease was taken back is told so, with the epochs that apply", "[cluster]") {
  Fixture f;
  auto a = f.node("cpu");
  auto run = f.queued_run("cpu");
  REQUIRE(f.cluster.lease(a, 1).size() == 1);
  f.clock->advance(31s);
  f.cluster.sweep();  // a is lost; the run is queued again, still at epoch 1
  Caller node_a{CallerKind::Node, a, ""};
  auto taken = f.cluster.run_for_writer(node_a, run, 1);
  REQUIRE_FALSE(taken.ok());
  CHECK(taken.error().code == kStaleEpoch);
  CHECK(taken.error().message.find("was taken back: the node was lost and the run queued again") !=
        std::string::npos);
  auto b = f.node("cpu");
  REQUIRE(f.cluster.lease(b, 1).size() == 1);
  auto moved = f.cluster.run_for_writer(node_a, run, 1);
  REQUIRE_FALSE(moved.ok());
  CHECK(moved.error().message.find("the run was leased again (epoch 2)") != std::string::npos);
}

TEST_CASE("a run's dropped log bytes add up without wrapping around", "[cluster]") {
  Fixture f;
  auto a = f.node("cpu");
  auto run = f.queued_run("cpu");
  REQUIRE(f.cluster.lease(a, 1).size() == 1);
  StatusReport report;
  report.status = RunStatus::Completed;
  report.dropped_logs = {{"logs/a", {{"bytes", INT64_MAX}, {"why", "holes"}}},
                         {"logs/b", {{"bytes", INT64_MAX}, {"why", "holes"}}},
                         {"logs/c", {{"bytes", 5}, {"why", "holes"}}}};
  f.cluster.update_status(run, a, report);
  auto json = Cluster::run_json(**f.cluster.run_for_user({CallerKind::User, "", ""}, run));
  CHECK(json["dropped_log_bytes"] == UINT64_MAX);
  CHECK(json["dropped_logs"]["logs/c"]["bytes"] == 5);
}

// ---- runs across nodes (gang leases) ----

namespace {

struct GangFixture : Fixture {
  std::string gang(const std::string& compute, int node_count) {
    auto run = cluster.submit_run(SubmitRequest{"x: 1", "job.yml", "exp", compute, node_count});
    REQUIRE(run.ok());
    REQUIRE(cluster.queue_run(run->run_id).ok());
    return run->run_id;
  }
  RunStatus report(const std::string& run, const std::string& node, RunStatus status,
                   nlohmann::json error = nullptr) {
    StatusReport report;
    report.status = status;
    report.error = std::move(error);
    if (spec_is_failure(status)) report.exit_code = 1;
    return cluster.update_status(run, node, report);
  }
  static bool spec_is_failure(RunStatus status) { return status == RunStatus::Failed; }
  nlohmann::json view(const std::string& run) {
    return cluster.run_view(**cluster.run_for_user({CallerKind::User, "", ""}, run));
  }
  std::vector<std::string> stop_commands(const std::string& node, const std::string& run,
                                         std::int64_t epoch, const std::string& status) {
    auto outcome = cluster.heartbeat(node, HeartbeatReport{"running", "", {{run, epoch, status}}});
    std::vector<std::string> reasons;
    for (const auto& command : outcome.commands)
      if (command["type"] == "stop") reasons.push_back(command["reason"]);
    return reasons;
  }
};

}  // namespace

TEST_CASE("a run across nodes is leased to all its nodes at once, each with its node rank",
          "[cluster][gang]") {
  GangFixture f;
  auto a = f.node("cpu");
  auto b = f.node("cpu");
  auto c = f.node("cpu");
  auto run = f.gang("cpu", 2);
  auto leased = f.cluster.lease(b, 4);
  REQUIRE(leased.size() == 1);
  CHECK(leased[0].node_rank == 0);
  CHECK(leased[0].node_count == 2);
  REQUIRE(leased[0].nodes.size() == 2);
  CHECK(leased[0].nodes[0].node_id == b);
  // The other share is placed now (on the first free node by id) and handed to its node at its
  // next lease call.
  std::string other = leased[0].nodes[1].node_id;
  REQUIRE((other == a || other == c));
  std::string idle = other == a ? c : a;
  CHECK(f.cluster.take_computes_to_serve() == std::set<std::string>{"cpu"});
  CHECK(f.cluster.has_work_for(other));
  CHECK_FALSE(f.cluster.has_work_for(idle));
  auto share = f.cluster.lease(other, 4);
  REQUIRE(share.size() == 1);
  CHECK(share[0].node_rank == 1);
  CHECK(share[0].epoch == leased[0].epoch);
  CHECK(share[0].nodes[0].node_id == b);
  // Both shares hold the run; a third node does not.
  Caller holder{CallerKind::Node, other, ""}, outsider{CallerKind::Node, idle, ""};
  CHECK(f.cluster.run_for_writer(holder, run, leased[0].epoch).ok());
  CHECK(f.cluster.run_for_writer(outsider, run, leased[0].epoch).error().code == kForbidden);
  auto view = f.view(run);
  CHECK(view["node_count"] == 2);
  CHECK(view["shares"][1]["node_id"] == other);
  auto nodes = f.cluster.list_nodes();
  for (const auto& node : nodes) {
    if (node["nodeId"] == other) CHECK(node["nodeRank"] == 1);
    if (node["nodeId"] == b) CHECK(node["nodeRank"] == 0);
    if (node["nodeId"] == idle) CHECK(node["runId"].is_null());
  }
}

TEST_CASE("the shares' statuses make the run's: Running when all run, Completed when all have",
          "[cluster][gang]") {
  GangFixture f;
  auto a = f.node("cpu");
  auto b = f.node("cpu");
  auto run = f.gang("cpu", 2);
  REQUIRE(f.cluster.lease(a, 1).size() == 1);
  REQUIRE(f.cluster.lease(b, 1).size() == 1);
  CHECK(f.report(run, a, RunStatus::Preparing) == RunStatus::Preparing);
  CHECK(f.report(run, a, RunStatus::Running) == RunStatus::Preparing);  // b has not started
  CHECK(f.report(run, b, RunStatus::Preparing) == RunStatus::Preparing);
  CHECK(f.report(run, b, RunStatus::Running) == RunStatus::Running);
  CHECK(f.report(run, b, RunStatus::Completed) == RunStatus::Running);
  CHECK(f.report(run, a, RunStatus::Finalizing) == RunStatus::Finalizing);
  CHECK(f.report(run, a, RunStatus::Completed) == RunStatus::Completed);
  CHECK(f.cluster.held_runs(a).empty());
  CHECK(f.cluster.held_runs(b).empty());
}

TEST_CASE("the first share to fail fails the run, naming its node rank, and the others are stopped",
          "[cluster][gang]") {
  GangFixture f;
  auto a = f.node("cpu");
  auto b = f.node("cpu");
  auto c = f.node("cpu");
  auto run = f.gang("cpu", 3);
  auto epoch = f.cluster.lease(a, 1).at(0).epoch;
  f.cluster.lease(b, 1);
  int c_rank = f.cluster.lease(c, 1).at(0).node_rank;
  for (const auto& node : {a, b, c}) f.report(run, node, RunStatus::Running);
  CHECK(f.report(run, c, RunStatus::Failed, {{"code", "UserError"}, {"message", "rank 5"}}) ==
        RunStatus::Failed);
  auto view = f.view(run);
  CHECK(view["error"]["node_rank"] == c_rank);
  CHECK(view["error"]["code"] == "UserError");
  // The live shares hear it at their next heartbeat, and a late report changes nothing.
  CHECK(f.stop_commands(a, run, epoch, "Running") ==
        std::vector<std::string>{"the run is already Failed"});
  CHECK(f.report(run, b, RunStatus::Completed) == RunStatus::Failed);
}

TEST_CASE(
    "a lost share's node requeues the whole run under a new epoch, and old shares are stopped",
    "[cluster][gang]") {
  GangFixture f;
  auto a = f.node("cpu");
  auto b = f.node("cpu");
  auto c = f.node("cpu");
  auto run = f.gang("cpu", 2);
  auto first = f.cluster.lease(a, 1).at(0);
  // Whichever of b and c took the other share is the one that goes silent.
  if (first.nodes[1].node_id != b) std::swap(b, c);
  f.cluster.lease(b, 1);
  f.report(run, a, RunStatus::Running);
  f.report(run, b, RunStatus::Running);
  // b goes silent; a and c keep heartbeating.
  f.clock->advance(31s);
  f.cluster.touch(a);
  f.cluster.touch(c);
  auto outcome = f.cluster.sweep();
  CHECK(outcome.computes_with_queued_runs == std::set<std::string>{"cpu"});
  CHECK(f.view(run)["status"] == "Queued");
  // a's share of the old epoch is stopped and may no longer write; the run is not leased back to
  // a until a has let go of it.
  CHECK(f.stop_commands(a, run, first.epoch, "Running") ==
        std::vector<std::string>{"lease moved to another node"});
  Caller caller_a{CallerKind::Node, a, ""};
  CHECK(f.cluster.run_for_writer(caller_a, run, first.epoch).error().code == kStaleEpoch);
  CHECK_FALSE(f.cluster.has_work_for(c));  // a still holds the old epoch: only c is free
  f.cluster.heartbeat(a, HeartbeatReport{"idle", "", {}});
  auto again = f.cluster.lease(c, 1);
  REQUIRE(again.size() == 1);
  CHECK(again[0].epoch == first.epoch + 1);
  CHECK(again[0].nodes[1].node_id == a);
}

TEST_CASE("two gangs that together need more nodes than exist run one after the other",
          "[cluster][gang]") {
  GangFixture f;
  auto a = f.node("cpu");
  auto b = f.node("cpu");
  auto c = f.node("cpu");
  auto first = f.gang("cpu", 2);
  auto second = f.gang("cpu", 2);
  auto single = f.queued_run("cpu");
  auto leased = f.cluster.lease(a, 4);
  REQUIRE(leased.size() == 1);
  CHECK(leased[0].run_id == first);
  // Whichever of b and c took the first gang's other share is b from here on.
  if (leased[0].nodes[1].node_id != b) std::swap(b, c);
  f.cluster.lease(b, 4);
  // c alone cannot take the second gang, and the single run behind it waits too: nothing holds a
  // share while it waits, and the gang is not starved.
  CHECK_FALSE(f.cluster.has_work_for(c));
  CHECK(f.cluster.lease(c, 4).empty());
  CHECK(f.view(second)["queue_reason"] == "waiting for 2 nodes of compute cpu to be free at once");
  f.report(first, a, RunStatus::Completed);
  f.report(first, b, RunStatus::Completed);
  auto next = f.cluster.lease(c, 4);
  REQUIRE(next.size() == 1);
  CHECK(next[0].run_id == second);
  std::string partner = next[0].nodes[1].node_id;
  CHECK(f.cluster.lease(partner, 4).at(0).run_id == second);
  CHECK(f.cluster.lease(partner == a ? b : a, 4).at(0).run_id == single);
}

TEST_CASE("a run needing more nodes than its compute has waits with the reason, and others pass",
          "[cluster][gang]") {
  GangFixture f;
  auto a = f.node("cpu");
  f.node("cpu");
  auto big = f.gang("cpu", 4);
  auto small = f.queued_run("cpu");
  CHECK(f.view(big)["queue_reason"] == "needs 4 nodes; compute cpu has 2 usable");
  auto leased = f.cluster.lease(a, 4);
  REQUIRE(leased.size() == 1);
  CHECK(leased[0].run_id == small);
}

TEST_CASE("a canceled gang is told to every share, and the first to end Canceled ends it",
          "[cluster][gang]") {
  GangFixture f;
  auto a = f.node("cpu");
  auto b = f.node("cpu");
  auto run = f.gang("cpu", 2);
  auto epoch = f.cluster.lease(a, 1).at(0).epoch;
  f.cluster.lease(b, 1);
  f.report(run, a, RunStatus::Running);
  f.report(run, b, RunStatus::Running);
  CHECK(f.cluster.cancel(run) == RunStatus::CancelRequested);
  for (const auto& node : {a, b}) {
    auto outcome =
        f.cluster.heartbeat(node, HeartbeatReport{"running", "", {{run, epoch, "Running"}}});
    REQUIRE(outcome.commands.size() == 1);
    CHECK(outcome.commands[0]["type"] == "cancel");
  }
  CHECK(f.report(run, b, RunStatus::Canceled) == RunStatus::Canceled);
}

TEST_CASE("a gang's shares survive a control plane restart, and one not yet handed out is requeued",
          "[cluster][gang]") {
  amlnode::test::TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  std::string running, pending, a, b, c, d;
  {
    auto store = open_sqlite_store((dir / "cp.db").string());
    REQUIRE(store.ok());
    auto contents = (*store)->load();
    REQUIRE(contents.ok());
    Cluster cluster(*contents, clock, ClusterPolicy{}, "user");
    auto node = [&] {
      auto token = cluster.create_registration_token("cpu");
      return cluster.register_node(cluster.identify(token).token_hash, NodeRegistration{})->node_id;
    };
    a = node();
    b = node();
    auto gang = [&](int count) {
      auto run = cluster.submit_run(SubmitRequest{"x: 1", "job.yml", "exp", "cpu", count});
      REQUIRE(cluster.queue_run(run->run_id).ok());
      return run->run_id;
    };
    running = gang(2);
    cluster.lease(a, 1);
    cluster.lease(b, 1);
    StatusReport report;
    report.status = RunStatus::Running;
    cluster.update_status(running, a, report);
    cluster.update_status(running, b, report);
    c = node();
    d = node();
    pending = gang(2);
    REQUIRE(cluster.lease(c, 1).at(0).epoch == 1);  // d's share is not handed out yet
    for (auto& op : cluster.take_changes()) REQUIRE(op(**store).ok());
  }
  auto store = open_sqlite_store((dir / "cp.db").string());
  REQUIRE(store.ok());
  auto contents = (*store)->load();
  REQUIRE(contents.ok());
  Cluster cluster(*contents, clock, ClusterPolicy{}, "user");
  auto view = cluster.run_view(**cluster.run_for_user({CallerKind::User, "", ""}, running));
  CHECK(view["status"] == "Running");
  CHECK(view["shares"][1]["status"] == "Running");
  CHECK(cluster.held_runs(b) == std::vector<std::string>{running});
  StatusReport done;
  done.status = RunStatus::Completed;
  cluster.update_status(running, a, done);
  CHECK(cluster.update_status(running, b, done) == RunStatus::Completed);
  // The gang whose share never reached d is queued again under a new epoch.
  CHECK(cluster.held_runs(d).empty());
  auto again = cluster.lease(d, 1);
  REQUIRE(again.size() == 1);
  CHECK(again[0].run_id == pending);
  CHECK(again[0].epoch == 2);
}

TEST_CASE("a gang's barrier opens once every share is prepared, at the master's rendezvous port",
          "[cluster][gang]") {
  GangFixture f;
  auto a = f.node("cpu");
  auto b = f.node("cpu");
  auto run = f.gang("cpu", 2);
  f.cluster.set_rendezvous_port(a, 29611);  // 6105 is taken on a
  auto first = f.cluster.lease(a, 1).at(0);
  CHECK(first.master_port == 29611);
  auto second = f.cluster.lease(b, 1).at(0);
  CHECK(second.master_port == 29611);
  CHECK_FALSE(f.cluster.share_prepared(run, a));
  CHECK_FALSE(f.cluster.share_prepared(run, a));  // asking again changes nothing
  CHECK(f.cluster.share_prepared(run, b));
  CHECK(f.cluster.share_prepared(run, a));
}

TEST_CASE("a share whose answer never reached its node is handed out again once its gang began",
          "[cluster][gang]") {
  GangFixture f;
  auto a = f.node("cpu");
  auto b = f.node("cpu");
  auto run = f.gang("cpu", 2);
  auto epoch = f.cluster.lease(a, 1).at(0).epoch;
  auto lost = f.cluster.lease(b, 1);
  REQUIRE(lost.size() == 1);
  f.report(run, a, RunStatus::Preparing);
  // b never got its answer; the master is already preparing: b's share waits for b, unchanged.
  CHECK(f.cluster.return_lease(b, lost));
  CHECK(f.cluster.has_work_for(b));
  auto again = f.cluster.lease(b, 1);
  REQUIRE(again.size() == 1);
  CHECK(again[0].run_id == run);
  CHECK(again[0].epoch == epoch);
  CHECK(again[0].node_rank == 1);
  CHECK(f.view(run)["status"] == "Preparing");
}

TEST_CASE("a gang's daemon launches go only to its shares' nodes, under its epoch's token",
          "[cluster][gang][launch]") {
  GangFixture f;
  auto a = f.node("cpu", "10.0.0.1");
  auto b = f.node("cpu", "10.0.0.2");
  auto c = f.node("cpu", "10.0.0.3");
  auto run = f.gang("cpu", 2);
  auto first = f.cluster.lease(a, 1).at(0);
  if (first.nodes[1].node_id != b) std::swap(b, c);
  std::string other = first.nodes[1].address;
  std::string idle = other == "10.0.0.2" ? "10.0.0.3" : "10.0.0.2";
  auto second = f.cluster.lease(b, 1).at(0);
  // Every share is given the same token, of this run and epoch only.
  REQUIRE_FALSE(first.launch_token.empty());
  CHECK(second.launch_token == first.launch_token);
  CHECK(f.cluster.run_for_launcher(first.launch_token, run).ok());
  CHECK(f.cluster.run_for_launcher("amllaunch_1_00", run).error().code == kUnauthorized);
  CHECK(f.cluster.run_for_launcher(f.cluster.launch_token(run, 7), run).error().code ==
        kStaleEpoch);
  // Nothing starts on a node without a share, nor on mpirun's own node.
  auto elsewhere = f.cluster.add_launch(run, idle, "orted");
  REQUIRE_FALSE(elsewhere.ok());
  CHECK(elsewhere.error().code == kForbidden);
  CHECK(elsewhere.error().message ==
        "host " + idle + " holds no share of run " + run + "; its nodes are 10.0.0.1, " + other);
  CHECK(f.cluster.add_launch(run, "10.0.0.1", "orted").error().code == kForbidden);
  // The other share takes its launch once, reports it ended, and a waiter sees the code.
  CHECK_FALSE(f.cluster.take_launch(run, 1));
  auto launch = f.cluster.add_launch(run, other, "orted --daemonize=no", "key-1");
  REQUIRE(launch.ok());
  CHECK(launch->node_rank == 1);
  // Asked again with its key (the answer was lost): the same launch, not a second one.
  CHECK(f.cluster.add_launch(run, other, "orted --daemonize=no", "key-1")->id == launch->id);
  CHECK_FALSE(f.cluster.take_launch(run, 0));
  auto taken = f.cluster.take_launch(run, 1);
  REQUIRE(taken);
  CHECK(taken->command == "orted --daemonize=no");
  // Until the share reports it running, a take hands it out again (a long poll's answer may
  // never have arrived); then never again.
  CHECK(f.cluster.take_launch(run, 1)->id == launch->id);
  REQUIRE(f.cluster.update_launch(run, launch->id, amlnode::wire::LaunchState::Running, {}).ok());
  CHECK_FALSE(f.cluster.take_launch(run, 1));
  CHECK(f.cluster.launch(run, launch->id)->state == amlnode::wire::LaunchState::Running);
  REQUIRE(f.cluster.update_launch(run, launch->id, amlnode::wire::LaunchState::Exited, 3).ok());
  CHECK(
      f.cluster.update_launch(run, launch->id, amlnode::wire::LaunchState::Exited, 0)->exit_code ==
      3);
  CHECK(f.cluster.launch(run, 9).error().code == kNotFound);
  // A node gets at most kMaxLaunchesPerNode launches an epoch.
  REQUIRE(f.cluster.add_launch(run, other, "orted").ok());
  CHECK(f.cluster.add_launch(run, other, "orted").error().code == kConflict);
  // The run ending retires the token.
  f.report(run, a, RunStatus::Failed);
  CHECK(f.cluster.run_for_launcher(first.launch_token, run).error().code == kStaleEpoch);
}

TEST_CASE("a node holding a share of a live run across nodes heartbeats every second",
          "[cluster][gang]") {
  GangFixture f;
  auto a = f.node("cpu");
  auto b = f.node("cpu");
  auto policy = f.cluster.policy().heartbeat_interval;
  REQUIRE(policy > Cluster::kShareHeartbeatInterval);
  CHECK(f.cluster.heartbeat(a, HeartbeatReport{"idle", "", {}}).interval == policy);
  auto run = f.gang("cpu", 2);
  auto epoch = f.cluster.lease(a, 1).at(0).epoch;
  f.cluster.lease(b, 1);
  // So a share failing on one node is stopped on the other within about a second.
  CHECK(
      f.cluster.heartbeat(b, HeartbeatReport{"running", "", {{run, epoch, "Running"}}}).interval ==
      Cluster::kShareHeartbeatInterval);
  f.report(run, a, RunStatus::Failed);
  auto stopped = f.cluster.heartbeat(b, HeartbeatReport{"running", "", {{run, epoch, "Running"}}});
  CHECK(stopped.commands.size() == 1);
  f.report(run, b, RunStatus::Failed);
  CHECK(f.cluster.heartbeat(b, HeartbeatReport{"idle", "", {}}).interval == policy);
}

namespace {

ComputeRequest pool(const std::string& pool_id) {
  return {"pool", kComputeKindBatch, {{"pool_id", pool_id}, {"account_name", "pool"}}};
}

}  // namespace

TEST_CASE("an attached Batch pool takes Batch tasks of its pool only, and leases say what it is",
          "[cluster][batch]") {
  Fixture f;
  auto node = f.node("pool");
  auto attached = f.cluster.put_compute(pool("pool-a"));
  REQUIRE(attached.ok());
  CHECK(attached->created);
  CHECK(attached->record.settings ==
        nlohmann::json{{"pool_id", "pool-a"}, {"account_name", "pool"}});
  auto again = f.cluster.put_compute(pool("pool-a"));
  REQUIRE(again.ok());
  CHECK_FALSE(again->created);
  auto other = f.cluster.put_compute(pool("pool-b"));
  REQUIRE_FALSE(other.ok());
  CHECK(other.error().code == kConflict);

  SubmitRequest task{"azure_batch_step: {}", "job.yml", "exp", "pool"};
  task.batch_task = true;
  SubmitRequest training{"script: train.py", "job.yml", "exp", "pool"};
  auto refused = f.cluster.submit_run(training);
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(refused.error().message, Catch::Contains("runs AzureBatchStep tasks"));
  task.batch_pool_id = "pool-b";
  refused = f.cluster.submit_run(task);
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(refused.error().message, Catch::Contains("asks for pool pool-b"));
  training.compute_name = "cpu";
  task.compute_name = "cpu";
  task.batch_pool_id = "";
  refused = f.cluster.submit_run(task);
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(refused.error().message, Catch::Contains("compute cpu is not one"));
  CHECK(f.cluster.submit_run(training).ok());

  task.compute_name = "pool";
  task.batch_pool_id = "pool-a";
  auto run = f.cluster.submit_run(task);
  REQUIRE(run.ok());
  REQUIRE(f.cluster.queue_run(run->run_id).ok());
  auto leased = f.cluster.lease(node, 1);
  REQUIRE(leased.size() == 1);
  CHECK(leased[0].node_id == node);
  CHECK(leased[0].compute_name == "pool");
  CHECK(leased[0].compute_kind == "batch");
  CHECK(leased[0].batch_pool_id == "pool-a");
  CHECK(leased[0].batch_account_name == "pool");

  // Detach waits for the compute's live runs; the record then goes, kept by nothing.
  auto busy = f.cluster.remove_compute("pool", ComputeRemoval::Detach);
  REQUIRE_FALSE(busy.ok());
  CHECK(busy.error().code == kConflict);
  StatusReport completed;
  completed.status = RunStatus::Completed;
  completed.exit_code = 0;
  f.cluster.update_status(run->run_id, node, completed);
  REQUIRE(f.cluster.remove_compute("pool", ComputeRemoval::Detach).ok());
  CHECK(f.cluster.compute_record("pool") == nullptr);
  CHECK(f.cluster.remove_compute("pool", ComputeRemoval::Detach).error().code == kNotFound);
  CHECK(f.cluster.list_computes()["computes"].empty());
}

TEST_CASE("attached computes are restored from the store", "[cluster][batch]") {
  StoreContents contents;
  contents.computes.push_back(
      ComputeRecord{"pool", "batch", {{"pool_id", "pool-a"}, {"account_name", "acct"}}, 5});
  Cluster cluster{std::move(contents), std::make_shared<ManualClock>(), ClusterPolicy{}, "user"};
  REQUIRE(cluster.compute_record("pool"));
  CHECK(cluster.compute_status("pool")["kind"] == "batch");
  CHECK(cluster.list_computes()["computes"][0]["settings"]["account_name"] == "acct");
}

TEST_CASE("a cluster's target counts busy, queued and recently idle nodes, and idle nodes leave",
          "[cluster][scaling]") {
  Fixture f;
  auto created = f.cluster.put_compute({"cpu",
                                        kComputeKindAmlCompute,
                                        {{"vm_size", "STANDARD_D2_V2"},
                                         {"vm_priority", "dedicated"},
                                         {"min_nodes", 1},
                                         {"max_nodes", 3},
                                         {"idle_seconds_before_scaledown", 60},
                                         {"description", ""}}});
  REQUIRE(created.ok());
  auto a = f.node("cpu");
  auto b = f.node("cpu");
  auto c = f.node("cpu");
  auto status = f.cluster.compute_status("cpu");
  CHECK(status["current_node_count"] == 3);
  CHECK(status["target_node_count"] == 3);  // idle, but within their grace
  CHECK(status["allocation_state"] == "Steady");
  CHECK(status["scale_settings"] == nlohmann::json{{"minimum_node_count", 1},
                                                   {"maximum_node_count", 3},
                                                   {"idle_seconds_before_scaledown", 60}});
  CHECK(status["vm_size"] == "STANDARD_D2_V2");
  CHECK(status["provisioning_state"] == "Succeeded");
  CHECK(status["errors"] == nlohmann::json::array());

  // A run keeps its node busy; the two others idle past the grace, and one of them may go: the
  // target is the busy node and min_nodes allows no fewer.
  auto run = f.queued_run("cpu");
  REQUIRE(f.cluster.lease(a, 1).size() == 1);
  f.clock->advance(61s);
  for (const auto& id : {a, b, c}) f.cluster.heartbeat(id, {"idle", "", {}});
  f.cluster.heartbeat(a, {"running", "", {{run, 1, "Running"}}});
  f.cluster.sweep();
  status = f.cluster.compute_status("cpu");
  CHECK(status["target_node_count"] == 1);
  CHECK(status["allocation_state"] == "Resizing");
  CHECK(status["node_state_counts"]["leaving"] == 2);
  auto told = f.cluster.heartbeat(b, {"idle", "", {}});
  CHECK(told.commands.dump().find("\"leave\"") != std::string::npos);
  CHECK(f.cluster.lease(b, 1).empty());
  // Its last heartbeat says it leaves for good: it is removed.
  HeartbeatReport leaving{"leaving", "", {}, true};
  CHECK(f.cluster.heartbeat(b, leaving).removed);
  CHECK(f.cluster.heartbeat(c, leaving).removed);
  status = f.cluster.compute_status("cpu");
  CHECK(status["current_node_count"] == 1);
  CHECK(status["allocation_state"] == "Steady");

  // Queued work asks for nodes, up to max_nodes.
  for (int i = 0; i < 4; ++i) f.queued_run("cpu");
  CHECK(f.cluster.compute_status("cpu")["target_node_count"] == 3);
  CHECK(f.cluster.compute_status("cpu")["allocation_state"] == "Resizing");

  // The settings: min above max refused; a cluster with nodes is not deleted; nor detached.
  ScaleUpdate update;
  update.min_nodes = 5;
  CHECK(f.cluster.update_compute("cpu", update).error().code == kInvalidRequest);
  update.min_nodes = 0;
  update.idle_seconds_before_scaledown = 10;
  auto updated = f.cluster.update_compute("cpu", update);
  REQUIRE(updated.ok());
  CHECK(updated->settings["idle_seconds_before_scaledown"] == 10);
  CHECK(f.cluster.remove_compute("cpu", ComputeRemoval::Detach).error().code == kInvalidRequest);
  CHECK(f.cluster.remove_compute("cpu", ComputeRemoval::Delete).error().code == kConflict);
}

TEST_CASE("a cluster with min_nodes keeps that many idle nodes", "[cluster][scaling]") {
  Fixture f;
  REQUIRE(f.cluster
              .put_compute({"cpu",
                            kComputeKindAmlCompute,
                            {{"vm_size", "S"},
                             {"vm_priority", "dedicated"},
                             {"min_nodes", 2},
                             {"max_nodes", 4},
                             {"idle_seconds_before_scaledown", 0},
                             {"description", ""}}})
              .ok());
  auto a = f.node("cpu");
  auto b = f.node("cpu");
  auto c = f.node("cpu");
  f.clock->advance(1s);
  f.cluster.sweep();
  auto status = f.cluster.compute_status("cpu");
  CHECK(status["target_node_count"] == 2);
  CHECK(status["node_state_counts"]["leaving"] == 1);
  // Deleting waits for the nodes to leave; then the cluster goes.
  HeartbeatReport leaving{"leaving", "", {}, true};
  for (const auto& id : {a, b, c}) f.cluster.heartbeat(id, leaving);
  CHECK(f.cluster.remove_compute("cpu", ComputeRemoval::Delete).ok());
  CHECK(f.cluster.compute_record("cpu") == nullptr);
}

TEST_CASE(
    "a join token registers up to its uses, each node its own, until it expires or is revoked",
    "[cluster][tokens]") {
  Fixture f;
  auto made = f.cluster.create_registration_token({"cpu", 2, std::chrono::seconds(3600)});
  auto hash = f.cluster.identify(made.token).token_hash;
  auto registration = [&](const std::string& key) {
    NodeRegistration r;
    r.hostname = "vm";
    r.registration_key = key;
    return f.cluster.register_node(hash, r);
  };
  std::string key_a(64, 'a'), key_b(64, 'b'), key_c(64, 'c');
  auto a = registration(key_a);
  auto b = registration(key_b);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->node_id != b->node_id);
  CHECK(a->node_token != b->node_token);
  // Used up: a third node is refused, but a node that lost its answer gets itself again.
  CHECK(registration(key_c).error().code == kUnauthorized);
  auto again = registration(key_b);
  REQUIRE(again.ok());
  CHECK(again->node_id == b->node_id);
  CHECK(f.cluster.registration_token_spent(hash));
  auto listed = f.cluster.list_registration_tokens("cpu")["tokens"];
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["uses"] == 2);
  CHECK(listed[0]["max_uses"] == 2);
  CHECK(listed[0]["nodes"] == nlohmann::json{a->node_id, b->node_id});
  CHECK(listed[0].dump().find(made.token) == std::string::npos);

  // Expiry: a fresh join token is refused once its time is up.
  auto brief = f.cluster.create_registration_token({"cpu", 5, std::chrono::seconds(60)});
  hash = f.cluster.identify(brief.token).token_hash;
  REQUIRE(registration(key_c).ok());
  f.clock->advance(61s);
  CHECK(registration(std::string(64, 'd')).error().code == kUnauthorized);

  // Revoked: nothing registers with it, not even a node it registered before.
  auto open = f.cluster.create_registration_token({"cpu", 5, std::nullopt});
  hash = f.cluster.identify(open.token).token_hash;
  REQUIRE(registration(std::string(64, 'e')).ok());
  REQUIRE(f.cluster.revoke_registration_token(Cluster::token_id_of(open.record)).ok());
  CHECK(registration(std::string(64, 'f')).error().code == kUnauthorized);
  CHECK(registration(std::string(64, 'e')).error().code == kUnauthorized);
  CHECK(f.cluster.revoke_registration_token("tok-nothing").error().code == kNotFound);
}

TEST_CASE("a node asking to leave for good is removed only once it holds and reports nothing",
          "[cluster][scaling]") {
  Fixture f;
  auto node = f.node("cpu");
  auto run = f.queued_run("cpu");
  REQUIRE(f.cluster.lease(node, 1).size() == 1);
  HeartbeatReport leaving{"leaving", "", {{run, 1, "Running"}}, true};
  CHECK_FALSE(f.cluster.heartbeat(node, leaving).removed);
  StatusReport completed;
  completed.status = RunStatus::Completed;
  completed.exit_code = 0;
  f.cluster.update_status(run, node, completed);
  CHECK_FALSE(f.cluster.heartbeat(node, leaving).removed);  // it still says it has the run
  leaving.runs.clear();
  CHECK(f.cluster.heartbeat(node, leaving).removed);
  CHECK(f.cluster.list_nodes().empty());
}
