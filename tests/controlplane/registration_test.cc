// Registration, tokens and who may read what: docs/protocol.md "Nodes" and the token table.

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "tests/controlplane/cp_test_support.h"
#include "tests/support/temp_dir.h"

using namespace amlnode::controlplane;
using namespace amlnode::controlplane::test;

namespace {

nlohmann::json registration_body(const std::string& compute = "cpu-cluster") {
  return {
      {"hostname", "node-1"},
      {"ips", {"10.0.0.4"}},
      {"ssh_port", 22},
      {"cpus", 16},
      {"memory_bytes", 68719476736},
      {"gpus", 0},
      {"labels",
       {{"compute_name", compute}, {"vm_size", "STANDARD_D2_V2"}, {"vm_priority", "dedicated"}}},
      {"agent_version", "0.1.0"}};
}

}  // namespace

TEST_CASE("a registration token registers one node and is spent", "[registration]") {
  TestServer server;
  auto token = server.make_registration_token();
  auto first = server.user().post("/v1/nodes/register", token, registration_body());
  REQUIRE(first.status == 200);
  auto answer = first.json();
  CHECK(answer["heartbeat_interval_seconds"] == 5);
  CHECK(answer["heartbeat_timeout_seconds"] == 30);
  std::string node_id = answer["node_id"];
  std::string node_token = answer["node_token"];

  SECTION("a second registration with the same token is 401") {
    auto second = server.user().post("/v1/nodes/register", token, registration_body());
    CHECK(second.status == 401);
    CHECK(second.json()["error"]["code"] == "Unauthorized");
  }
  SECTION("the node token opens the node's own endpoints") {
    NodeClient node(server.port(), {node_id, node_token});
    auto heartbeat = node.heartbeat();
    CHECK(heartbeat.status == 200);
    CHECK(heartbeat.json()["commands"] == nlohmann::json::array());
    CHECK(node.http().get("/v1/nodes/" + node_id, node_token).status == 200);
  }
  SECTION("a wrong or missing token is 401") {
    NodeClient impostor(server.port(), {node_id, node_token + "0"});
    CHECK(impostor.heartbeat().status == 401);
    NodeClient anonymous(server.port(), {node_id, ""});
    auto response = anonymous.heartbeat();
    CHECK(response.status == 401);
    CHECK(response.header("www-authenticate") == "Bearer");
    CHECK(server.user().get("/v1/nodes", "not-a-token").status == 401);
  }
  SECTION("the node token is stored hashed, never in clear") {
    auto db = amlnode::test::slurp(server.data_dir() / "data" / "controlplane.db");
    auto wal = amlnode::test::slurp(server.data_dir() / "data" / "controlplane.db-wal");
    CHECK(db.find(node_token) == std::string::npos);
    CHECK(wal.find(node_token) == std::string::npos);
    CHECK(wal.find(token) == std::string::npos);
  }
}

TEST_CASE("a registration repeated with the same key answers the same node", "[registration]") {
  TestServer server;
  auto token = server.make_registration_token();
  auto body = registration_body();
  body["registration_key"] = std::string(64, 'k');
  auto first = server.user().post("/v1/nodes/register", token, body);
  REQUIRE(first.status == 200);
  std::string node_id = first.json()["node_id"];
  std::string node_token = first.json()["node_token"];

  // The node died before storing the answer; it asks again with the key it had stored first.
  auto again = server.user().post("/v1/nodes/register", token, body);
  REQUIRE(again.status == 200);
  CHECK(again.json()["node_id"] == node_id);
  CHECK(again.json()["node_token"] == node_token);
  CHECK(again.json()["heartbeat_interval_seconds"] == 5);
  CHECK(NodeClient(server.port(), {node_id, node_token}).heartbeat().status == 200);
  CHECK(server.user().get("/v1/nodes", server.user_token()).json().size() == 1);

  SECTION("a different key, or none, cannot use the spent token") {
    body["registration_key"] = std::string(64, 'x');
    CHECK(server.user().post("/v1/nodes/register", token, body).status == 401);
    body.erase("registration_key");
    CHECK(server.user().post("/v1/nodes/register", token, body).status == 401);
    CHECK(server.user().get("/v1/nodes", server.user_token()).json().size() == 1);
  }
  SECTION("the spent token still opens nothing else") {
    CHECK(server.user().get("/v1/nodes", token).status == 401);
  }
  SECTION("the key is remembered across a restart, and stored only hashed") {
    server.restart();
    auto after = server.user().post("/v1/nodes/register", token, body);
    REQUIRE(after.status == 200);
    CHECK(after.json()["node_token"] == node_token);
    auto db = amlnode::test::slurp(server.data_dir() / "data" / "controlplane.db") +
              amlnode::test::slurp(server.data_dir() / "data" / "controlplane.db-wal");
    CHECK(db.find(std::string(64, 'k')) == std::string::npos);
    CHECK(db.find(node_token) == std::string::npos);
  }
  SECTION("keys too short to be secrets are refused, naming the field") {
    auto fresh = server.make_registration_token();
    body["registration_key"] = "short";
    auto refused = server.user().post("/v1/nodes/register", fresh, body);
    CHECK(refused.status == 400);
    CHECK(refused.json()["error"]["message"].get<std::string>().rfind("registration_key", 0) == 0);
  }
}

TEST_CASE("each token opens only its own endpoints", "[registration]") {
  TestServer server;
  auto a = server.node("cpu");
  auto b = server.node("cpu");

  CHECK(b.http().get("/v1/nodes/" + a.id(), b.token()).status == 403);
  CHECK(
      b.http().post("/v1/nodes/" + a.id() + "/heartbeat", b.token(), {{"state", "idle"}}).status ==
      403);
  CHECK(
      b.http().post("/v1/nodes/" + a.id() + "/lease", b.token(), nlohmann::json::object()).status ==
      403);
  // A node token is not a user token, and a user token does not heartbeat for a node.
  CHECK(a.http().get("/v1/nodes", a.token()).status == 403);
  CHECK(a.http().post("/v1/runs", a.token(), {{"experiment_name", "x"}}).status == 403);
  CHECK(server.user()
            .post("/v1/nodes/" + a.id() + "/heartbeat", server.user_token(), {{"state", "idle"}})
            .status == 403);
  // A registration token opens registration only.
  auto registration = server.make_registration_token();
  CHECK(server.user().get("/v1/nodes", registration).status == 403);
}

TEST_CASE("a registration token made for a compute binds the node to it", "[registration]") {
  TestServer server;
  auto token = server.make_registration_token("gpu-cluster");
  auto wrong = server.user().post("/v1/nodes/register", token, registration_body("cpu-cluster"));
  CHECK(wrong.status == 400);
  CHECK(wrong.json()["error"]["message"].get<std::string>().find("labels.compute_name") == 0);

  auto body = registration_body();
  body["labels"].erase("compute_name");
  auto right = server.user().post("/v1/nodes/register", token, body);
  REQUIRE(right.status == 200);
  auto nodes = server.user().get("/v1/nodes", server.user_token()).json();
  REQUIRE(nodes.size() == 1);
  CHECK(nodes[0]["computeName"] == "gpu-cluster");
}

TEST_CASE("registration bodies are checked field by field", "[registration]") {
  TestServer server;
  auto check = [&](nlohmann::json body, const std::string& field) {
    auto token = server.make_registration_token();
    auto response = server.user().post("/v1/nodes/register", token, body);
    INFO(response.body);
    CHECK(response.status == 400);
    CHECK(response.json()["error"]["message"].get<std::string>().rfind(field, 0) == 0);
    // A refused registration does not spend the token.
    CHECK(server.user().post("/v1/nodes/register", token, registration_body()).status == 200);
  };
  auto body = registration_body();
  body["cpus"] = "sixteen";
  check(body, "cpus");
  body = registration_body();
  body.erase("hostname");
  check(body, "hostname");
  body = registration_body();
  body["ips"] = {1, 2};
  check(body, "ips[0]");
  body = registration_body();
  body["labels"]["compute_name"] = "../etc";
  check(body, "labels.compute_name");
}

TEST_CASE("a preset registration token is single-use across restarts", "[registration]") {
  TestServer server([](ServerOptions& options) { options.registration_token = "preset-token"; });
  CHECK(server.user().post("/v1/nodes/register", "preset-token", registration_body()).status ==
        200);
  server.restart();
  CHECK(server.user().post("/v1/nodes/register", "preset-token", registration_body()).status ==
        401);
}

TEST_CASE("without --user-token one is made and kept 0600 in the data dir", "[registration]") {
  TestServer server;
  auto file = server.data_dir() / "data" / "user_token";
  CHECK(server.server().user_token_file() == file);
  struct stat st {};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  std::string token = server.user_token();
  server.restart();
  CHECK(server.user_token() == token);
  CHECK(server.user().get("/v1/nodes", token).status == 200);
}

TEST_CASE("list_nodes and compute status speak AmlCompute's fields", "[registration]") {
  TestServer server;
  auto a = server.node("cpu-cluster", "host-a");
  auto b = server.node("cpu-cluster", "host-b");
  auto c = server.node("gpu-cluster", "host-c");
  REQUIRE(a.heartbeat({{"state", "running"}}).status == 200);
  REQUIRE(b.heartbeat({{"state", "unusable"}, {"reason", "disk full: /var"}}).status == 200);
  auto run_id = server.queue_run("cpu-cluster");
  auto leased = a.lease();
  REQUIRE(leased.json()["runs"].size() == 1);

  auto nodes = server.user().get("/v1/nodes", server.user_token()).json();
  REQUIRE(nodes.size() == 3);
  for (const auto& node : nodes) {
    for (const char* field :
         {"nodeId", "privateIpAddress", "publicIpAddress", "port", "nodeState", "runId"}) {
      CHECK(node.contains(field));
    }
    if (node["nodeId"] == a.id()) {
      CHECK(node["nodeState"] == "running");
      CHECK(node["runId"] == run_id);
      CHECK(node["privateIpAddress"] == "10.0.0.4");
      CHECK(node["port"] == 22);
    }
    if (node["nodeId"] == b.id()) CHECK(node["nodeState"] == "unusable");
    if (node["nodeId"] == c.id()) CHECK(node["runId"].is_null());
  }

  auto status = server.user().get("/v1/computes/cpu-cluster/status", server.user_token()).json();
  CHECK(status["current_node_count"] == 2);
  CHECK(status["node_state_counts"] == nlohmann::json{{"idle", 0},
                                                      {"running", 1},
                                                      {"preparing", 0},
                                                      {"unusable", 1},
                                                      {"leaving", 0},
                                                      {"preempted", 0}});
  CHECK(status["vm_size"] == "STANDARD_D2_V2");
}

TEST_CASE("a drained node is told to drain and gets no more runs", "[registration]") {
  TestServer server;
  auto node = server.node("cpu");
  auto drained = server.user().post("/v1/nodes/" + node.id() + "/drain", server.user_token(),
                                    nlohmann::json::object());
  REQUIRE(drained.status == 200);
  auto commands = node.heartbeat().json()["commands"];
  CHECK(commands == nlohmann::json::array({{{"type", "drain"}}}));
  server.queue_run("cpu");
  CHECK(node.lease(1, 0.2).json()["runs"].empty());
  CHECK(server.user().post("/v1/nodes/no-such-node/drain", server.user_token(), {}).status == 404);
}
