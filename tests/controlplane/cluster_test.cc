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

  std::string node(const std::string& compute) {
    auto token = cluster.create_registration_token(compute);
    auto caller = cluster.identify(token);
    REQUIRE(caller.kind == CallerKind::Registration);
    NodeRegistration registration;
    registration.hostname = "host";
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
  f.cluster.update_status(run, report);
  auto json = Cluster::run_json(**f.cluster.run_for_user({CallerKind::User, "", ""}, run));
  CHECK(json["dropped_log_bytes"] == UINT64_MAX);
  CHECK(json["dropped_logs"]["logs/c"]["bytes"] == 5);
}
