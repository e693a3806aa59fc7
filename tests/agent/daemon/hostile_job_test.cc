// What a hostile (or careless) job can make the agent and the control plane do: each case is a real
// job run by a real agent against a real control plane, and checks that nothing outside the run is
// harmed and nothing is lost or dropped without saying so (docs/security.md).

#include <signal.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "tests/agent/daemon/one_node_cluster.h"
#include "tests/support/process.h"

using namespace amlnode;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kShellJob = "entry_script: job.sh\nuser_managed: true\nuse_docker: false\n";

}  // namespace

TEST_CASE("a metrics line nested 100 000 deep is skipped, and the control plane stays up",
          "[daemon][hostile]") {
  test::OneNodeCluster cluster;
  std::string deep = "{\"name\":\"x\",\"kind\":\"scalar\",\"value\":" + std::string(100000, '[') +
                     std::string(100000, ']') + "}";
  cluster.dir().write("src/deep.json", deep + "\n");
  cluster.dir().write("src/job.sh",
                      "cat deep.json >> \"$AMLNODE_METRICS_FILE\"\n"
                      "echo '{\"name\":\"loss\",\"kind\":\"scalar\",\"time\":1,\"value\":0.5}' >> "
                      "\"$AMLNODE_METRICS_FILE\"\n");
  std::string id = cluster.submit(kShellJob);
  CHECK(cluster.wait_terminal(id)["status"] == "Completed");
  for (int i = 0; i < 2; ++i) {
    auto status = test::run_command({test::amlnode_binary().string(), "metrics", id, "--json"},
                                    cluster.user_env());
    INFO(status.err);
    REQUIRE(status.exit_code == 0);
    auto answer = json::parse(status.out);
    CHECK(answer["skipped_lines"] == 1);
    CHECK(answer["metrics"]["loss"]["last"]["value"] == 0.5);
  }
  CHECK(cluster.server().run(id)["status"] == "Completed");  // still answering
}

TEST_CASE("a request body nested 100 000 deep is refused with 400", "[daemon][hostile]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp");
  server.start();
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  auto [status, body] =
      server.user_call("POST", "/v1/registration-tokens", json::parse("{\"compute_name\": \"x\"}"));
  REQUIRE(status == 201);
  agent::HttpRequest request;
  request.method = "POST";
  request.target = "/v1/runs";
  request.bearer_token = server.user_token();
  request.content_type = "application/json";
  request.body = "{\"job\": " + deep + "}";
  auto http = agent::make_http_client(*agent::parse_http_url(server.url()));
  auto answer = http->send(request);
  REQUIRE(answer.ok());
  CHECK(answer->status == 400);
  CHECK(answer->body.find("nested deeper than 64") != std::string::npos);
  CHECK(server.user_call("GET", "/v1/nodes").first == 200);
}
