// Run statuses as the node reports them, cancel, and outputs.

#include <catch2/catch.hpp>

#include "tests/controlplane/cp_test_support.h"

using namespace amlnode::controlplane;
using namespace amlnode::controlplane::test;

TEST_CASE("status updates are monotone and idempotent", "[status]") {
  TestServer server;
  auto node = server.node("cpu");
  auto run_id = server.queue_run("cpu");
  REQUIRE(node.lease().json()["runs"].size() == 1);
  auto status = [&](const std::string& s, const nlohmann::json& extra = nlohmann::json::object()) {
    auto response = node.status(run_id, 1, s, extra);
    INFO(response.body);
    REQUIRE(response.status == 200);
    return response.json()["status"].get<std::string>();
  };
  CHECK(status("Preparing") == "Preparing");
  CHECK(status("Running") == "Running");
  CHECK(status("Running") == "Running");
  CHECK(status("Preparing") == "Running");  // behind: acknowledged, nothing changes
  CHECK(status("Finalizing") == "Finalizing");
  CHECK(status("Failed", {{"exit_code", 3},
                          {"error", {{"code", "UserError"}, {"message", "boom"}}},
                          {"timings", {{"run_seconds", 12.5}}}}) == "Failed");
  CHECK(status("Completed") == "Failed");  // terminal is final
  CHECK(status("Running") == "Failed");

  auto record = server.run(run_id);
  CHECK(record["status"] == "Failed");
  CHECK(record["exit_code"] == 3);
  CHECK(record["error"]["code"] == "UserError");
  CHECK(record["timings"]["run_seconds"] == 12.5);
  CHECK_FALSE(record["start_time_utc"].is_null());
  CHECK_FALSE(record["end_time_utc"].is_null());
}

TEST_CASE("status bodies are checked", "[status]") {
  TestServer server;
  auto node = server.node("cpu");
  auto run_id = server.queue_run("cpu");
  REQUIRE(node.lease().json()["runs"].size() == 1);
  auto post = [&](const std::string& body) {
    return node.http().request("POST", "/v1/runs/" + run_id + "/status", node.token(), body);
  };
  CHECK(post(R"({"epoch": 1, "status": "Queued"})").status == 400);
  CHECK(post(R"({"epoch": 1, "status": "Sleeping"})").status == 400);
  CHECK(post(R"({"status": "Running"})").status == 400);
  auto wrong_type = post(R"({"epoch": "one", "status": "Running"})");
  CHECK(wrong_type.status == 400);
  CHECK(wrong_type.json()["error"]["message"].get<std::string>().rfind("epoch:", 0) == 0);
  CHECK(post(R"({"epoch": 1, "status": "Running", "exit_code": "zero"})").status == 400);
  CHECK(post(R"({"epoch": 1, "status": "Running"})").status == 200);
}

TEST_CASE("a cancel reaches the node in its heartbeat answer", "[status]") {
  TestServer server;
  auto node = server.node("cpu");
  auto run_id = server.queue_run("cpu");
  REQUIRE(node.lease().json()["runs"].size() == 1);
  REQUIRE(node.status(run_id, 1, "Running").status == 200);

  auto cancel = server.user().post("/v1/runs/" + run_id + "/cancel", server.user_token(), {});
  REQUIRE(cancel.status == 200);
  CHECK(cancel.json()["status"] == "CancelRequested");
  auto heartbeat =
      node.heartbeat({{"state", "running"},
                      {"runs", {{{"run_id", run_id}, {"epoch", 1}, {"status", "Running"}}}}});
  CHECK(heartbeat.json()["commands"] ==
        nlohmann::json::array({{{"type", "cancel"}, {"run_id", run_id}}}));
  // Not Running again after a cancel; only the end.
  CHECK(node.status(run_id, 1, "Running").json()["status"] == "CancelRequested");
  CHECK(node.status(run_id, 1, "Canceled").json()["status"] == "Canceled");
  CHECK(node.heartbeat().json()["commands"].empty());
  CHECK(server.user()
            .post("/v1/runs/" + run_id + "/cancel", server.user_token(), {})
            .json()["status"] == "Canceled");
}

TEST_CASE("a run canceled while queued is Canceled at once and never leased", "[status]") {
  TestServer server;
  auto node = server.node("cpu");
  auto queued = server.queue_run("cpu");
  auto not_started = server.submit_run("cpu");
  CHECK(server.user()
            .post("/v1/runs/" + queued + "/cancel", server.user_token(), {})
            .json()["status"] == "Canceled");
  CHECK(server.user()
            .post("/v1/runs/" + not_started + "/cancel", server.user_token(), {})
            .json()["status"] == "Canceled");
  CHECK(node.lease().json()["runs"].empty());
  CHECK(server.run(queued)["status"] == "Canceled");
}

TEST_CASE("outputs are uploaded by the node and read by the user", "[status]") {
  TestServer server;
  auto node = server.node("cpu");
  auto run_id = server.queue_run("cpu");
  REQUIRE(node.lease().json()["runs"].size() == 1);
  CHECK(server.user().get("/v1/runs/" + run_id + "/outputs", server.user_token()).status == 404);
  std::string outputs(3 << 20, 'o');
  auto put = node.http().request("PUT", "/v1/runs/" + run_id + "/outputs", node.token(), outputs,
                                 {{"X-Amlnode-Epoch", "1"}});
  REQUIRE(put.status == 200);
  CHECK(put.json()["bytes"] == outputs.size());
  auto got = server.user().get("/v1/runs/" + run_id + "/outputs", server.user_token());
  CHECK(got.status == 200);
  CHECK(got.body == outputs);
  CHECK(server.run(run_id)["has_outputs"] == true);
  auto stale = node.http().request("PUT", "/v1/runs/" + run_id + "/outputs", node.token(), "x",
                                   {{"X-Amlnode-Epoch", "7"}});
  CHECK(stale.status == 409);
}

TEST_CASE("submissions are checked field by field", "[status]") {
  TestServer server;
  auto submit = [&](const nlohmann::json& body) {
    return server.user().post("/v1/runs", server.user_token(), body);
  };
  auto message = [](const HttpResponse& r) {
    return r.json()["error"]["message"].get<std::string>();
  };
  nlohmann::json good = {
      {"job", {{"text", "x: 1"}}}, {"experiment_name", "exp"}, {"compute_name", "cpu"}};
  CHECK(submit(good).status == 201);
  auto body = good;
  body.erase("job");
  CHECK(message(submit(body)).rfind("job:", 0) == 0);
  body = good;
  body["job"]["text"] = 5;
  CHECK(message(submit(body)).rfind("job.text:", 0) == 0);
  body = good;
  body["experiment_name"] = "../escape";
  CHECK(message(submit(body)).rfind("experiment_name:", 0) == 0);
  body = good;
  body["job"]["file_name"] = "a/b.yml";
  CHECK(message(submit(body)).rfind("job.file_name:", 0) == 0);
  CHECK(server.user().get("/v1/runs/nope", server.user_token()).status == 404);
}
