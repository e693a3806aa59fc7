#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "agent/daemon/state_store.h"
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
