// Log delivery of one run against the real amlnode-controlplane executable over loopback, with
// a real SQLite state store: what the control plane ends up holding, byte for byte.

#include "agent/daemon/log_shipper.h"

#include <catch2/catch.hpp>
#include <fstream>

#include "agent/daemon/daemon.h"
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
    auto leased = client->lease(node, 1, std::chrono::seconds(0), 6105);
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
  CHECK(cursors->at("user_logs/std_log.txt").server == std_log.size());
  CHECK(cursors->at("user_logs/std_log.txt").file == std_log.size());

  SECTION("later bytes are sent from the stored cursor, once") {
    std::string more = numbered(5000, "more");
    append_to(run.run_dir / "user_logs" / "std_log.txt", more);
    REQUIRE(run.ship().ok());
    REQUIRE(run.ship().ok());
    CHECK(run.held("user_logs/std_log.txt") == std_log + more);
  }
  SECTION("a cursor stored behind the control plane (a crash) resends, and nothing doubles") {
    auto behind = run.store->log_cursors(run.lease.run_id)->at("user_logs/std_log.txt");
    behind.server = behind.file = 100;
    behind.tail = std_log.substr(100 - kLogTailBytes, kLogTailBytes);
    REQUIRE(run.store->save_log_cursor(run.lease.run_id, "user_logs/std_log.txt", behind).ok());
    std::string more = "after the restart\n";
    append_to(run.run_dir / "user_logs" / "std_log.txt", more);
    REQUIRE(run.ship().ok());
    CHECK(run.held("user_logs/std_log.txt") == std_log + more);
    auto moved = run.store->log_cursors(run.lease.run_id);
    REQUIRE(moved.ok());
    CHECK(moved->at("user_logs/std_log.txt").server == std_log.size() + more.size());
  }
}

TEST_CASE("a sparse log file is delivered without its holes, which a marker counts", "[daemon]") {
  LeasedRunFixture run;
  auto file = run.run_dir / "wd" / "logs" / "sparse.bin";
  append_to(file, "before the hole\n");
  // 200 GiB that cost the node nothing; reading them would cost the control plane 200 GiB.
  fs::resize_file(file, 200ull << 30);
  std::ofstream(file, std::ios::binary | std::ios::in | std::ios::out | std::ios::ate)
      << "after the hole\n";
  auto shipped = run.ship();
  REQUIRE(shipped.ok());
  std::string held = run.held("logs/sparse.bin");
  INFO(held);
  // Holes come in whole blocks (4 KiB here): the rest of the first block is data, zeros included.
  const std::uint64_t hole = (200ull << 30) - 4096;
  // The marker goes on a line of its own.
  std::string expected = "before the hole\n" + std::string(4096 - 16, '\0') +
                         "\n[amlnode: 200.0 GiB (" + std::to_string(hole) +
                         " bytes) of logs/sparse.bin from byte 4096 are a hole (a sparse file "
                         "region holding no data): left out]\nafter the hole\n";
  CHECK(held == expected);
  REQUIRE(shipped->dropped.count("logs/sparse.bin"));
  CHECK(shipped->dropped.at("logs/sparse.bin").bytes == hole);
  CHECK(shipped->dropped.at("logs/sparse.bin").why == "holes");
  // Nothing is sent twice.
  REQUIRE(run.ship().ok());
  CHECK(run.held("logs/sparse.bin") == held);
}

TEST_CASE("a log file cut, rewritten or replaced is sent again after a marker", "[daemon]") {
  LeasedRunFixture run;
  auto file = run.run_dir / "user_logs" / "std_log.txt";
  append_to(file, "first line\nsecond line\n");
  REQUIRE(run.ship().ok());

  SECTION("cut shorter, then written on") {
    fs::resize_file(file, 0);
    append_to(file, "again\n");
    REQUIRE(run.ship().ok());
    CHECK(
        run.held("user_logs/std_log.txt") ==
        "first line\nsecond line\n[amlnode: user_logs/std_log.txt was cut shorter (6 bytes now, 23 "
        "read before); what follows is its content again from its start]\nagain\n");
  }
  SECTION("rewritten in place with more than it had") {
    std::ofstream(file, std::ios::binary | std::ios::trunc)
        << "a whole new text, longer than before\n";
    REQUIRE(run.ship().ok());
    CHECK(run.held("user_logs/std_log.txt") ==
          "first line\nsecond line\n[amlnode: user_logs/std_log.txt was rewritten before byte 23; "
          "what follows is its content again from its start]\na whole new text, longer than "
          "before\n");
  }
  SECTION("replaced by another file") {
    auto other = run.run_dir / "user_logs" / "other.txt";
    append_to(other, "replacement\n");
    fs::rename(other, file);
    REQUIRE(run.ship().ok());
    CHECK(run.held("user_logs/std_log.txt") ==
          "first line\nsecond line\n[amlnode: user_logs/std_log.txt was replaced by another file; "
          "what follows is the new file from its start]\nreplacement\n");
  }
  // Told once: a delivery that finds nothing new sends nothing.
  std::string held = run.held("user_logs/std_log.txt");
  REQUIRE(run.ship().ok());
  CHECK(run.held("user_logs/std_log.txt") == held);
}

TEST_CASE("a stream the control plane refuses for good is set aside and counted", "[daemon]") {
  LeasedRunFixture run;
  append_to(run.run_dir / "wd" / "logs" / "back\\slash.txt", "never delivered\n");
  append_to(run.run_dir / "wd" / "logs" / "fine.txt", "delivered\n");
  std::vector<std::string> notes;
  auto shipped =
      ship_run_logs(*run.client, *run.store, run.node, run.lease.run_id, run.lease.epoch,
                    run.run_dir, [&notes](const std::string& line) { notes.push_back(line); });
  REQUIRE(shipped.ok());
  CHECK(run.held("logs/fine.txt") == "delivered\n");
  REQUIRE(shipped->dropped.count("logs/back\\slash.txt"));
  CHECK(shipped->dropped.at("logs/back\\slash.txt").bytes == 16);
  CHECK(shipped->dropped.at("logs/back\\slash.txt").why.find("InvalidStreamName") !=
        std::string::npos);
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].rfind("log stream logs/back\\slash.txt is set aside: the control plane refused",
                       0) == 0);
  // Set aside for good: later deliveries neither send it nor note it again, and still count it.
  append_to(run.run_dir / "wd" / "logs" / "back\\slash.txt", "more\n");
  auto again =
      ship_run_logs(*run.client, *run.store, run.node, run.lease.run_id, run.lease.epoch,
                    run.run_dir, [&notes](const std::string& line) { notes.push_back(line); });
  REQUIRE(again.ok());
  CHECK(notes.size() == 1);
  CHECK(again->dropped.at("logs/back\\slash.txt").bytes == 21);
}

TEST_CASE("a link planted where a log file was is not followed", "[daemon]") {
  LeasedRunFixture run;
  append_to(run.dir / "secret.txt", "not the run's\n");
  append_to(run.run_dir / "wd" / "logs" / "real" / "a.txt", "mine\n");
  REQUIRE(run.ship().ok());
  // The folder the stream lives in becomes a link to a folder outside.
  fs::remove_all(run.run_dir / "wd" / "logs" / "real");
  fs::create_directories(run.dir / "outside");
  append_to(run.dir / "outside" / "a.txt", "mine\nsecret\n");
  fs::create_directory_symlink(run.dir / "outside", run.run_dir / "wd" / "logs" / "real");
  REQUIRE(run.ship().ok());
  CHECK(run.held("logs/real/a.txt") == "mine\n");
}

TEST_CASE("a delivery failure that repeats every tick is logged once a minute", "[daemon]") {
  RepeatedError error;
  auto start = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  std::string line;
  CHECK(error.due("disk full", start, line));
  CHECK(line == "disk full");
  int logged = 0;
  // Four ticks a second for a minute and a half.
  for (int tick = 1; tick <= 360; ++tick)
    if (error.due("disk full", start + std::chrono::milliseconds(250 * tick), line)) ++logged;
  CHECK(logged == 1);
  CHECK(line == "disk full (again 240 times in the last minute)");
  // Another error is said at once.
  CHECK(error.due("unreachable", start + std::chrono::seconds(91), line));
  CHECK(line == "unreachable");
}
