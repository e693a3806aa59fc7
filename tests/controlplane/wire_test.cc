// The protocol bodies both sides share (spec/wire.h): what the agent encodes passes the control
// plane's checks unchanged, and what the control plane encodes reads back on the agent's side.

#include "spec/wire.h"

#include <catch2/catch.hpp>

#include "controlplane/request_bodies.h"

using namespace amlnode;

TEST_CASE("a heartbeat as the agent encodes it passes the control plane's checks", "[wire]") {
  wire::HeartbeatReport report{"unusable",
                               "docker unavailable: no socket",
                               {{"run-1", 3, "Running"}, {"run-2", 1, "Finalizing"}}};
  auto parsed = controlplane::parse_heartbeat(wire::heartbeat_body(report).dump());
  REQUIRE(parsed);
  CHECK(parsed->state == "unusable");
  CHECK(parsed->reason == "docker unavailable: no socket");
  REQUIRE(parsed->runs.size() == 2);
  CHECK(parsed->runs[1].run_id == "run-2");
  CHECK(parsed->runs[1].epoch == 1);
  CHECK(parsed->runs[1].status == "Finalizing");
  // Every state a node may report is one the control plane takes.
  for (const auto& state : wire::kNodeStates) {
    CHECK(controlplane::parse_heartbeat(wire::heartbeat_body({state, "", {}}).dump()));
  }
}

TEST_CASE("a lease answer and commands as the control plane encodes them read back", "[wire]") {
  wire::LeasedRun run{"exp_1_ab", 2, "exp", "command: [\"true\"]\n", "job.yml"};
  auto back = wire::leased_run_from_json(wire::leased_run_json(run));
  REQUIRE(back.ok());
  CHECK(back->run_id == run.run_id);
  CHECK(back->epoch == 2);
  CHECK(back->experiment_name == "exp");
  CHECK(back->job_text == run.job_text);
  CHECK(back->job_file_name == "job.yml");

  nlohmann::json commands =
      nlohmann::json::array({wire::command_json({"stop", "r1", "lease moved to another node"}),
                             wire::command_json({"drain", "", ""}),
                             7,
                             {{"type", 3}}});
  auto read = wire::commands_from_json(commands);
  REQUIRE(read.size() == 3);  // the number is skipped; a type of the wrong kind reads as ""
  CHECK(read[0].type == "stop");
  CHECK(read[0].run_id == "r1");
  CHECK(read[0].reason == "lease moved to another node");
  CHECK(read[1].type == "drain");
  CHECK(read[2].type.empty());
  CHECK(wire::command_json({"drain", "", ""}) == nlohmann::json{{"type", "drain"}});

  auto missing = wire::leased_run_from_json({{"run_id", "r"}, {"epoch", 1}});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == "BadAnswer");
  CHECK(missing.error().message == "a leased run has no job");

  // Optional fields of the wrong type are a BadAnswer too, never an exception (found by
  // fuzz/request_bodies_fuzz.cc).
  nlohmann::json answer = wire::leased_run_json(run);
  answer["experiment_name"] = 5;
  auto experiment = wire::leased_run_from_json(answer);
  REQUIRE_FALSE(experiment.ok());
  CHECK(experiment.error().code == "BadAnswer");
  answer = wire::leased_run_json(run);
  answer["job"]["file_name"] = nlohmann::json::array();
  auto file_name = wire::leased_run_from_json(answer);
  REQUIRE_FALSE(file_name.ok());
  CHECK(file_name.error().code == "BadAnswer");
  answer = wire::leased_run_json(run);
  answer.erase("experiment_name");
  answer["job"].erase("file_name");
  auto defaults = wire::leased_run_from_json(answer);
  REQUIRE(defaults.ok());
  CHECK(defaults->experiment_name.empty());
  CHECK(defaults->job_file_name == "job.yml");
}

TEST_CASE("a share of a run across nodes reads back, and a share that does not add up is refused",
          "[wire]") {
  wire::LeasedRun run{"exp_1_ab", 4, "exp", "x: 1\n", "job.yml"};
  run.node_rank = 1;
  run.node_count = 2;
  run.nodes = {{"node-a", "10.0.0.4"}, {"node-b", "10.0.0.5"}};
  run.master_port = 29500;
  auto back = wire::leased_run_from_json(wire::leased_run_json(run));
  REQUIRE(back.ok());
  CHECK(back->master_port == 29500);
  CHECK(back->node_rank == 1);
  CHECK(back->node_count == 2);
  REQUIRE(back->nodes.size() == 2);
  CHECK(back->nodes[1].node_id == "node-b");
  CHECK(back->nodes[1].address == "10.0.0.5");
  // A run of one node carries no share and reads as rank 0 of 1.
  auto single = wire::leased_run_from_json(wire::leased_run_json({"r", 1, "e", "x: 1\n", "j"}));
  REQUIRE(single.ok());
  CHECK(single->node_count == 1);
  CHECK_FALSE(wire::leased_run_json({"r", 1, "e", "x: 1\n", "j"}).contains("share"));

  auto refused = [&](auto&& change) {
    nlohmann::json answer = wire::leased_run_json(run);
    change(answer["share"]);
    auto read = wire::leased_run_from_json(answer);
    return !read.ok() && read.error().code == "BadAnswer";
  };
  CHECK(refused([](nlohmann::json& share) { share["node_rank"] = 2; }));
  CHECK(refused([](nlohmann::json& share) { share["node_count"] = 3; }));
  CHECK(refused([](nlohmann::json& share) { share["node_count"] = 1; }));
  CHECK(refused([](nlohmann::json& share) { share["nodes"][0] = "node-a"; }));
  CHECK(refused([](nlohmann::json& share) { share["nodes"][1].erase("address"); }));
  CHECK(refused([](nlohmann::json& share) { share = "rank 1"; }));
  CHECK(refused([](nlohmann::json& share) { share["master_port"] = 70000; }));
}
