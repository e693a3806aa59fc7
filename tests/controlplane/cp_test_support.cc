#include "tests/controlplane/cp_test_support.h"

#include <catch2/catch.hpp>

namespace amlnode::controlplane::test {

HttpResponse NodeClient::heartbeat(const nlohmann::json& body) {
  return http_.post("/v1/nodes/" + id() + "/heartbeat", token(), body);
}

HttpResponse NodeClient::lease(int max_runs, double wait_seconds) {
  return http_.post("/v1/nodes/" + id() + "/lease", token(),
                    {{"max_runs", max_runs}, {"wait_seconds", wait_seconds}});
}

HttpResponse NodeClient::status(const std::string& run_id, std::int64_t epoch,
                                const std::string& status, const nlohmann::json& extra) {
  nlohmann::json body = extra;
  body["epoch"] = epoch;
  body["status"] = status;
  return http_.post("/v1/runs/" + run_id + "/status", token(), body);
}

HttpResponse NodeClient::append(const std::string& run_id, const std::string& stream,
                                std::uint64_t offset, std::int64_t epoch,
                                const std::string& bytes) {
  return http_.request(
      "PUT", "/v1/runs/" + run_id + "/logs/" + stream + "?offset=" + std::to_string(offset),
      token(), bytes, {{"X-Amlnode-Epoch", std::to_string(epoch)}});
}

TestServer::TestServer(std::function<void(ServerOptions&)> tweak) : tweak_(std::move(tweak)) {
  start();
}

TestServer::~TestServer() {
  stop();
}

void TestServer::start() {
  ServerOptions options;
  options.data_dir = dir_.path() / "data";
  options.clock = clock_;
  // Sweeps happen when a test calls sweep_now(), not on their own.
  options.sweep_interval = std::chrono::hours(1);
  if (tweak_) tweak_(options);
  server_ = std::make_unique<ControlPlaneServer>(options);
  auto started = server_->start();
  INFO((started ? "" : started.error().message));
  REQUIRE(started.ok());
  user_ = std::make_unique<HttpClient>(server_->port(), options.tls.has_value());
}

void TestServer::stop() {
  user_.reset();
  if (server_) server_->stop();
}

void TestServer::restart() {
  stop();
  server_.reset();
  start();
}

std::string TestServer::make_registration_token(const std::string& compute) {
  nlohmann::json body = nlohmann::json::object();
  if (!compute.empty()) body["compute_name"] = compute;
  auto response = user_->post("/v1/registration-tokens", user_token(), body);
  REQUIRE(response.status == 201);
  return response.json()["token"].get<std::string>();
}

NodeCredentials TestServer::register_node(const std::string& compute, const std::string& hostname) {
  auto token = make_registration_token();
  auto response =
      user_->post("/v1/nodes/register", token,
                  {{"hostname", hostname},
                   {"ips", {"10.0.0.4"}},
                   {"ssh_port", 22},
                   {"cpus", 4},
                   {"memory_bytes", 1 << 30},
                   {"gpus", 0},
                   {"labels", {{"compute_name", compute}, {"vm_size", "STANDARD_D2_V2"}}},
                   {"agent_version", "0.1.0"}});
  INFO(response.body);
  REQUIRE(response.status == 200);
  auto json = response.json();
  return {json["node_id"].get<std::string>(), json["node_token"].get<std::string>()};
}

NodeClient TestServer::node(const std::string& compute, const std::string& hostname) {
  return NodeClient(port(), register_node(compute, hostname));
}

std::string TestServer::submit_run(const std::string& compute, const std::string& experiment) {
  auto response =
      user_->post("/v1/runs", user_token(),
                  {{"job", {{"text", "entry_script: train.py\n"}, {"file_name", "job.yml"}}},
                   {"experiment_name", experiment},
                   {"compute_name", compute}});
  INFO(response.body);
  REQUIRE(response.status == 201);
  return response.json()["run_id"].get<std::string>();
}

std::string TestServer::queue_run(const std::string& compute, const std::string& experiment) {
  auto run_id = submit_run(compute, experiment);
  auto response = user_->request("PUT", "/v1/runs/" + run_id + "/snapshot", user_token(),
                                 std::string("\x1f\x8b snapshot of ") + run_id);
  INFO(response.body);
  REQUIRE(response.status == 200);
  REQUIRE(response.json()["status"] == "Queued");
  return run_id;
}

nlohmann::json TestServer::run(const std::string& run_id) {
  auto response = user_->get("/v1/runs/" + run_id, user_token());
  INFO(response.body);
  REQUIRE(response.status == 200);
  return response.json();
}

std::string url_encode(const std::string& value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace amlnode::controlplane::test
