// Restart safety: the server process is SIGKILLed while nodes append logs and users submit runs,
// then started again on the same data dir. Nothing it acknowledged may be missing.

#include <signal.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <mutex>
#include <regex>
#include <thread>

#include "tests/controlplane/cp_test_support.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode::controlplane;
using namespace amlnode::controlplane::test;
using namespace std::chrono_literals;

namespace {

constexpr const char* kUserToken = "restart-test-user-token";
constexpr const char* kStd = "user_logs/std_log.txt";

// amlnode-controlplane as a separate process on a port it picks.
class ServerProcess {
 public:
  explicit ServerProcess(const std::filesystem::path& dir) : dir_(dir) {
    static int generation = 0;
    out_ = dir_ / ("server-" + std::to_string(++generation) + ".out");
    pid_ = amlnode::test::start_command(
        {std::string(AMLNODE_BINARY_DIR) + "/bin/amlnode-controlplane", "--listen", "127.0.0.1:0",
         "--data-dir", (dir_ / "data").string(), "--user-token", kUserToken},
        out_, dir_ / "server.err");
    std::regex listening("listening on http://127\\.0\\.0\\.1:([0-9]+)");
    bool up = amlnode::test::eventually(
        [&] {
          std::ifstream in(out_);
          std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
          std::smatch match;
          if (!std::regex_search(text, match, listening)) return false;
          port_ = static_cast<std::uint16_t>(std::stoi(match[1]));
          return true;
        },
        10s);
    REQUIRE(up);
  }
  ~ServerProcess() {
    if (pid_ > 0) kill(SIGTERM);
  }

  std::uint16_t port() const { return port_; }

  int kill(int signal) {
    ::kill(pid_, signal);
    int code = amlnode::test::wait_command(pid_, 10s);
    pid_ = -1;
    return code;
  }

 private:
  std::filesystem::path dir_;
  std::filesystem::path out_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
};

std::string line(int i) {
  return "line " + std::to_string(i) + " of the training log\n";
}

}  // namespace

TEST_CASE("a SIGKILLed server loses nothing it acknowledged", "[restart]") {
  amlnode::test::TempDir dir;
  auto server = std::make_unique<ServerProcess>(dir.path());
  HttpClient user(server->port());

  auto token =
      user.post("/v1/registration-tokens", kUserToken, {{"compute_name", "cpu"}}).json()["token"];
  auto registered = user.post("/v1/nodes/register", token.get<std::string>(), {{"hostname", "n1"}});
  REQUIRE(registered.status == 200);
  NodeCredentials credentials{registered.json()["node_id"], registered.json()["node_token"]};

  auto submit = [&](HttpClient& client) -> std::string {
    auto created = client.post(
        "/v1/runs", kUserToken,
        {{"job", {{"text", "x: 1"}}}, {"experiment_name", "exp"}, {"compute_name", "cpu"}});
    if (created.status != 201) return "";
    std::string run_id = created.json()["run_id"];
    auto queued = client.request("PUT", "/v1/runs/" + run_id + "/snapshot", kUserToken, "snapshot");
    return queued.status == 200 ? run_id : "";
  };
  auto leased_run = submit(user);
  NodeClient node(server->port(), credentials);
  REQUIRE(node.lease().json()["runs"][0]["run_id"] == leased_run);
  REQUIRE(node.status(leased_run, 1, "Running").status == 200);

  // A node appends and a user submits as fast as they can; the server dies under them.
  std::atomic<bool> stop{false};
  std::uint64_t acknowledged_length = 0;
  std::string expected;
  // What was sent, including the chunk in flight when the server died: the server may have
  // written that one without its answer ever arriving.
  std::string sent;
  std::thread appender([&] {
    NodeClient appending(server->port(), credentials);
    for (int i = 0; !stop; ++i) {
      auto chunk = line(i);
      sent = expected + chunk;
      auto answer = appending.append(leased_run, kStd, expected.size(), 1, chunk);
      if (answer.status != 200) break;
      expected += chunk;
      acknowledged_length = answer.json()["length"];
    }
  });
  std::vector<std::string> acknowledged_runs;
  std::thread submitter([&] {
    HttpClient client(server->port());
    while (!stop) {
      auto run_id = submit(client);
      if (run_id.empty()) break;
      acknowledged_runs.push_back(run_id);
    }
  });
  std::this_thread::sleep_for(700ms);
  CHECK(server->kill(SIGKILL) == 128 + SIGKILL);
  stop = true;
  appender.join();
  submitter.join();
  INFO("acknowledged " << acknowledged_length << " log bytes and " << acknowledged_runs.size()
                       << " runs");
  REQUIRE(acknowledged_length > 0);
  REQUIRE(acknowledged_runs.size() > 0);

  server = std::make_unique<ServerProcess>(dir.path());
  HttpClient after(server->port());
  NodeClient node_after(server->port(), credentials);

  // The node's token still works and its run is where it was.
  CHECK(node_after.heartbeat({{"state", "running"}}).status == 200);
  auto record = after.get("/v1/runs/" + leased_run, kUserToken).json();
  CHECK(record["status"] == "Running");
  CHECK(record["epoch"] == 1);
  CHECK(record["node_id"] == credentials.id);

  // Every acknowledged byte is there, in order; the node resends from the server's length.
  auto stream = after.get("/v1/runs/" + leased_run + "/logs/" + kStd, kUserToken).body;
  CHECK(stream.size() >= acknowledged_length);
  REQUIRE(stream.size() <= sent.size());
  CHECK(stream == sent.substr(0, stream.size()));
  auto resumed = node_after.append(leased_run, kStd, 0, 1, sent + line(-1));
  CHECK(resumed.json()["length"] == sent.size() + line(-1).size());

  // Every acknowledged run exists and is queued, in submission order.
  for (const auto& run_id : acknowledged_runs) {
    CHECK(after.get("/v1/runs/" + run_id, kUserToken).json()["status"] == "Queued");
  }
  auto leased = node_after.lease(3).json()["runs"];
  REQUIRE(leased.size() == std::min<std::size_t>(3, acknowledged_runs.size()));
  for (std::size_t i = 0; i < leased.size(); ++i)
    CHECK(leased[i]["run_id"] == acknowledged_runs[i]);

  // The registration token stays spent.
  CHECK(after.post("/v1/nodes/register", token.get<std::string>(), {{"hostname", "n2"}}).status ==
        401);
  CHECK(server->kill(SIGTERM) == 0);
}

TEST_CASE("a stopped and restarted server keeps its queues, leases and logs", "[restart]") {
  TestServer server;
  auto node = server.node("cpu");
  auto first = server.queue_run("cpu");
  auto second = server.queue_run("cpu");
  auto third = server.queue_run("cpu");
  REQUIRE(node.lease().json()["runs"][0]["run_id"] == first);
  REQUIRE(node.append(first, kStd, 0, 1, "before restart\n").status == 200);
  REQUIRE(server.user().post("/v1/runs/" + third + "/cancel", server.user_token(), {}).status ==
          200);
  server.restart();

  NodeClient again(server.port(), {node.id(), node.token()});
  CHECK(again.append(first, kStd, 0, 1, "before restart\nafter\n").json()["length"] == 21);
  CHECK(again.status(first, 1, "Completed").json()["status"] == "Completed");
  auto leased = again.lease(5).json()["runs"];
  REQUIRE(leased.size() == 1);
  CHECK(leased[0]["run_id"] == second);
  CHECK(leased[0]["epoch"] == 1);
  CHECK(server.run(third)["status"] == "Canceled");
}
