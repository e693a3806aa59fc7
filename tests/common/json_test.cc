#include "common/json.h"

#include <catch2/catch.hpp>

using amlnode::json_depth_within;
using amlnode::parse_untrusted_json;

TEST_CASE("JSON nested deeper than the limit is refused before it is parsed", "[json]") {
  CHECK(json_depth_within("[[[]]]", 3));
  CHECK_FALSE(json_depth_within("[[[]]]", 2));
  CHECK(json_depth_within("{\"a\": {\"b\": [1, {}]}}", 4));
  CHECK_FALSE(json_depth_within("{\"a\": {\"b\": [1, {}]}}", 3));
  // Brackets inside strings, escaped quotes included, are not nesting.
  CHECK(json_depth_within("[\"[[[[\\\"[[[[\"]", 1));
  CHECK(json_depth_within("{\"\\\\\": 1}", 1));
  // Siblings do not add up.
  CHECK(json_depth_within("[[], [], [[]]]", 3));

  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  CHECK(parse_untrusted_json(deep).is_discarded());
  CHECK(parse_untrusted_json("{\"a\": [1, 2]}")["a"][1] == 2);
  CHECK(parse_untrusted_json("not json").is_discarded());
  auto at_limit = std::string(64, '[') + std::string(64, ']');
  CHECK_FALSE(parse_untrusted_json(at_limit).is_discarded());
  CHECK(parse_untrusted_json("[" + at_limit + "]").is_discarded());
}
