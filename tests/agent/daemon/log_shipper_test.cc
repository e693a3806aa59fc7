// Log delivery of one run against the real amlnode-controlplane executable over loopback, with
// a real SQLite state store: what the control plane ends up holding, byte for byte.

#include "agent/daemon/log_shipper.h"

#include <catch2/catch.hpp>
#include <fstream>

#include "tests/agent/daemon/control_plane_process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace amlnode::agent;
namespace fs = std::filesystem;

namespace {

void append_to(const fs::path& file, const std::string& bytes) {
  fs::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary | std::ios::app) << bytes;
}

// Bytes whose every stretch is different, so a piece sent twice or out of place shows.
std::string numbered(std::size_t size, const std::string& tag) {
  std::string out;
  for (std::size_t i = 0; out.size() < size; ++i) out += tag + std::to_string(i) + "\n";
  out.resize(size);
  return out;
}

// A node registered with a real control plane, holding the lease of one submitted run.
struct LeasedRunFixture {
  test::TempDir dir;
  test::ControlPlaneProcess server{dir / "cp"};
  std::unique_ptr<ControlPlaneClient> client;
  std::unique_ptr<StateStore> store;
  NodeIdentity node;
  LeasedRun lease;
  fs::path run_dir = dir / "state" / "runs" / "run";

  LeasedRunFixture() {
    server.start();
    client = make_http_control_plane_client(make_http_client(*parse_http_url(server.url())));
    auto opened = open_sqlite_state_store(dir / "state");
    REQUIRE(opened.ok());
    store = std::move(opened).value();
    NodeFacts facts;
    facts.hostname = "node-1";
    facts.labels = {{"compute_name", "cpu"}};
    auto registration = client->register_node(server.registration_token("cpu"), facts, "");
    REQUIRE(registration.ok());
    node = registration->identity;
    fs::create_directories(dir / "src");
    server.submit("command: [\"true\"]\n", dir / "src", "cpu");
    auto leased = client->lease(node, 1, std::chrono::seconds(0));
    REQUIRE(leased.ok());
    REQUIRE(leased->size() == 1);
    lease = leased->front();
  }

  Result<ShipResult> ship() {
    return ship_run_logs(*client, *store, node, lease.run_id, lease.epoch, run_dir);
  }
  std::string held(const std::string& stream) { return server.log(lease.run_id, stream); }
};

}  // namespace

TEST_CASE("every stream of a run reaches the control plane byte for byte", "[daemon]") {
  LeasedRunFixture run;
  // Larger than one request (4 MiB), so it goes in several chunks.
  std::string std_log = numbered(kMaxLogChunk * 2 + 12345, "out");
  append_to(run.run_dir / "user_logs" / "std_log.txt", std_log);
  append_to(run.run_dir / "system_logs" / "lifecycle.txt", "leased\n");
  append_to(run.run_dir / "wd" / "logs" / "deep" / "metrics.log", "step 1\n");
  append_to(run.dir / "secret.txt", "not the run's\n");
  fs::create_symlink(run.dir / "secret.txt", run.run_dir / "wd" / "logs" / "link.txt");

  REQUIRE(run.ship().ok());
  CHECK(run.held("user_logs/std_log.txt") == std_log);
  CHECK(run.held("system_logs/lifecycle.txt") == "leased\n");
  CHECK(run.held("logs/deep/metrics.log") == "step 1\n");
  auto [status, listed] = run.server.user_call("GET", "/v1/runs/" + run.lease.run_id + "/logs");
  CHECK(listed["streams"].size() == 3);  // the link was not followed
  auto cursors = run.store->log_cursors(run.lease.run_id);
  REQUIRE(cursors.ok());
  CHECK(cursors->at("user_logs/std_log.txt") == std_log.size());

  SECTION("later bytes are sent from the stored cursor, once") {
    std::string more = numbered(5000, "more");
    append_to(run.run_dir / "user_logs" / "std_log.txt", more);
    REQUIRE(run.ship().ok());
    REQUIRE(run.ship().ok());
    CHECK(run.held("user_logs/std_log.txt") == std_log + more);
  }
  SECTION("a cursor stored behind the control plane (a crash) resends, and nothing doubles") {
    REQUIRE(run.store->save_log_cursor(run.lease.run_id, "user_logs/std_log.txt", 100).ok());
    std::string more = "after the restart\n";
    append_to(run.run_dir / "user_logs" / "std_log.txt", more);
    REQUIRE(run.ship().ok());
    CHECK(run.held("user_logs/std_log.txt") == std_log + more);
    auto moved = run.store->log_cursors(run.lease.run_id);
    REQUIRE(moved.ok());
    CHECK(moved->at("user_logs/std_log.txt") == std_log.size() + more.size());
  }
}
