#include "common/result.h"

#include <catch2/catch.hpp>

using amlnode::Error;
using amlnode::Result;

TEST_CASE("Result carries either a value or an error", "[common]") {
  Result<int> good = 42;
  REQUIRE(good.ok());
  CHECK(*good == 42);

  Result<int> bad = Error{"Broken", "it broke"};
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == "Broken");
  CHECK(bad.error().message == "it broke");

  Result<void> done;
  CHECK(done.ok());
  Result<void> failed = Error{"X", "y"};
  CHECK_FALSE(failed.ok());
}
