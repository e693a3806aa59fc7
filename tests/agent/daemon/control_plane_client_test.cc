// The control plane client against the real amlnode-controlplane executable over loopback.

#include "agent/daemon/control_plane_client.h"

#include <catch2/catch.hpp>

#include "agent/daemon/state_store.h"
#include "tests/agent/daemon/control_plane_process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace amlnode::agent;

namespace {

NodeFacts facts_for(const std::string& compute) {
  NodeFacts facts;
  facts.hostname = "node-1";
  facts.ips = {"10.0.0.4"};
  facts.cpus = 4;
  facts.memory_bytes = 1ull << 33;
  facts.labels = {
      {"compute_name", compute}, {"vm_size", "STANDARD_D2_V2"}, {"vm_priority", "dedicated"}};
  facts.agent_version = "0.1.0";
  return facts;
}

std::unique_ptr<ControlPlaneClient> client_for(const test::ControlPlaneProcess& server) {
  return make_http_control_plane_client(make_http_client(*parse_http_url(server.url())));
}

}  // namespace

TEST_CASE("control plane URLs are parsed with their defaults", "[daemon]") {
  auto plain = parse_http_url("http://cp.example");
  REQUIRE(plain.ok());
  CHECK(plain->host == "cp.example");
  CHECK(plain->port == "80");
  CHECK_FALSE(plain->tls);
  auto tls = parse_http_url("https://[::1]:8631/prefix/");
  REQUIRE(tls.ok());
  CHECK(tls->tls);
  CHECK(tls->host == "::1");
  CHECK(tls->port == "8631");
  CHECK(tls->base_path == "/prefix");
  CHECK_FALSE(parse_http_url("ftp://x").ok());
  CHECK_FALSE(parse_http_url("http://x:port").ok());
  CHECK_FALSE(parse_http_url("http://:80").ok());
}

TEST_CASE("log stream names keep their slashes and encode the rest", "[daemon]") {
  CHECK(encode_stream_path("user_logs/std_log.txt") == "user_logs/std_log.txt");
  CHECK(encode_stream_path("logs/a b?.txt") == "logs/a%20b%3F.txt");
}

TEST_CASE("a node registers once, heartbeats, and its spent token is refused", "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp");
  server.start();
  auto client = client_for(server);
  std::string token = server.registration_token("cpu-cluster");

  auto registration = client->register_node(token, facts_for("cpu-cluster"), "");
  REQUIRE(registration.ok());
  CHECK_FALSE(registration->identity.node_id.empty());
  CHECK_FALSE(registration->identity.node_token.empty());
  CHECK(registration->heartbeat_interval.count() > 0);

  auto again = client->register_node(token, facts_for("cpu-cluster"), "");
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == "Unauthorized");

  auto answer = client->heartbeat(registration->identity, {"idle", "", {}});
  REQUIRE(answer.ok());
  CHECK(answer->commands.empty());

  auto [status, nodes] = server.user_call("GET", "/v1/nodes");
  REQUIRE(status == 200);
  REQUIRE(nodes.is_array());
  REQUIRE(nodes.size() == 1);
  CHECK(nodes[0]["nodeId"] == registration->identity.node_id);
  CHECK(nodes[0]["nodeState"] == "idle");

  SECTION("a wrong node token is refused") {
    NodeIdentity forged{registration->identity.node_id, "not-the-token"};
    auto refused = client->heartbeat(forged, {"idle", "", {}});
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == "Unauthorized");
  }
  SECTION("an empty queue answers the long poll with no runs") {
    auto leased = client->lease(registration->identity, 1, std::chrono::seconds(1), 6105);
    REQUIRE(leased.ok());
    CHECK(leased->empty());
  }
  SECTION("an unusable node says why") {
    REQUIRE(
        client->heartbeat(registration->identity, {"unusable", "disk full: /var/lib/amlnode", {}})
            .ok());
    auto [code, listed] = server.user_call("GET", "/v1/nodes");
    CHECK(listed[0]["nodeState"] == "unusable");
  }
}

TEST_CASE("a control plane that is not there is reported as unreachable", "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp");
  server.start();
  std::string url = server.url();
  server.kill();
  auto client = make_http_control_plane_client(make_http_client(*parse_http_url(url)));
  auto answer = client->heartbeat({"n", "t"}, {"idle", "", {}});
  REQUIRE_FALSE(answer.ok());
  CHECK(answer.error().code == "Unreachable");
}

TEST_CASE("a kept-alive connection survives a control plane restart", "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp");
  server.start();
  auto client = client_for(server);
  auto registration = client->register_node(server.registration_token("c"), facts_for("c"), "");
  REQUIRE(registration.ok());
  REQUIRE(client->heartbeat(registration->identity, {"idle", "", {}}).ok());
  server.stop();
  server.start();
  auto answer = client->heartbeat(registration->identity, {"idle", "", {}});
  INFO((answer.ok() ? "" : answer.error().message));
  CHECK(answer.ok());
}

TEST_CASE("a node killed before storing its identity registers again with its stored key",
          "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp");
  server.start();
  auto client = client_for(server);
  std::string token = server.registration_token("cpu-cluster");
  std::string key;
  {
    auto store = open_sqlite_state_store(dir / "state");
    REQUIRE(store.ok());
    auto made = (*store)->registration_key();
    REQUIRE(made.ok());
    key = *made;
  }
  CHECK(key.size() == 64);
  auto first = client->register_node(token, facts_for("cpu-cluster"), key);
  REQUIRE(first.ok());
  // The process dies here, before save_identity: the next one reopens the store.
  auto store = open_sqlite_state_store(dir / "state");
  REQUIRE(store.ok());
  auto reloaded = (*store)->registration_key();
  REQUIRE(reloaded.ok());
  CHECK(*reloaded == key);
  auto again = client->register_node(token, facts_for("cpu-cluster"), *reloaded);
  REQUIRE(again.ok());
  CHECK(again->identity.node_id == first->identity.node_id);
  CHECK(again->identity.node_token == first->identity.node_token);
  CHECK(client->heartbeat(again->identity, {"idle", "", {}}).ok());

  auto [status, nodes] = server.user_call("GET", "/v1/nodes");
  REQUIRE(status == 200);
  CHECK(nodes.size() == 1);

  SECTION("another key cannot use the spent token") {
    auto other = open_sqlite_state_store(dir / "other-state");
    REQUIRE(other.ok());
    auto stolen = client->register_node(token, facts_for("cpu-cluster"),
                                        (*other)->registration_key().value());
    REQUIRE_FALSE(stolen.ok());
    CHECK(stolen.error().code == "Unauthorized");
    auto keyless = client->register_node(token, facts_for("cpu-cluster"), "");
    REQUIRE_FALSE(keyless.ok());
    CHECK(keyless.error().code == "Unauthorized");
  }
  SECTION("the answer is the same after a control plane restart") {
    server.kill();
    server.start();
    auto after = client->register_node(token, facts_for("cpu-cluster"), key);
    REQUIRE(after.ok());
    CHECK(after->identity.node_token == first->identity.node_token);
  }
}
