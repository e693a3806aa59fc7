#include "agent/daemon/state_store.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace amlnode::agent;

TEST_CASE("the node identity is stored owner-only and survives reopening", "[daemon]") {
  test::TempDir dir;
  {
    auto store = open_sqlite_state_store(dir / "state");
    REQUIRE(store.ok());
    auto empty = (*store)->load_identity();
    REQUIRE(empty.ok());
    CHECK_FALSE(empty->has_value());
    REQUIRE((*store)->save_identity({"node-1", "secret"}).ok());
  }
  struct stat info {};
  REQUIRE(::stat((dir / "state" / "agent.db").c_str(), &info) == 0);
  CHECK((info.st_mode & 0777) == 0600);

  auto reopened = open_sqlite_state_store(dir / "state");
  REQUIRE(reopened.ok());
  auto identity = (*reopened)->load_identity();
  REQUIRE(identity.ok());
  REQUIRE(identity->has_value());
  CHECK((*identity)->node_id == "node-1");
  CHECK((*identity)->node_token == "secret");
}

TEST_CASE("a state dir that cannot be made is an error, not a crash", "[daemon]") {
  test::TempDir dir;
  dir.write("file", "x");
  auto store = open_sqlite_state_store(dir / "file" / "state");
  REQUIRE_FALSE(store.ok());
  CHECK(store.error().code == "StateStoreError");
}

TEST_CASE("held runs and the status outbox survive reopening, in order", "[daemon]") {
  test::TempDir dir;
  {
    auto store = open_sqlite_state_store(dir / "state");
    REQUIRE(store.ok());
    HeldRunRecord run{{"run-1", 3, "exp", "command: [echo]", "job.yml"}, "Running", 4242, 777};
    REQUIRE((*store)->save_run(run).ok());
    REQUIRE((*store)->save_run({{"run-2", 1, "exp", "x", "job.yml"}, "Queued", {}, {}}).ok());
    REQUIRE((*store)->enqueue_status({"run-1", 3, "Preparing", {}, {}, {}}).ok());
    REQUIRE(
        (*store)->enqueue_status({"run-1", 3, "Failed", 1, Error{"UserError", "exit 1"}, {}}).ok());
    REQUIRE((*store)->enqueue_status({"run-2", 1, "Preparing", {}, {}, {}}).ok());
  }
  auto store = open_sqlite_state_store(dir / "state");
  REQUIRE(store.ok());
  auto runs = (*store)->load_runs();
  REQUIRE(runs.ok());
  REQUIRE(runs->size() == 2);
  CHECK((*runs)[0].lease.epoch == 3);
  CHECK((*runs)[0].shim_pid == 4242);
  CHECK((*runs)[0].shim_start_time == 777ull);
  CHECK_FALSE((*runs)[1].shim_pid.has_value());

  auto pending = (*store)->pending_statuses();
  REQUIRE(pending.ok());
  REQUIRE(pending->size() == 3);
  CHECK((*pending)[0].report.status == "Preparing");
  CHECK((*pending)[1].report.exit_code == 1);
  CHECK((*pending)[1].report.error->code == "UserError");
  REQUIRE((*store)->acknowledge_status((*pending)[0].seq).ok());
  REQUIRE((*store)->drop_run("run-2").ok());
  pending = (*store)->pending_statuses();
  REQUIRE(pending->size() == 1);
  CHECK((*pending)[0].report.status == "Failed");
  CHECK((*store)->load_runs()->size() == 1);
}
