#pragma once

// JSON from anyone we do not trust (a run's files, a node's or a user's request body, an answer
// from the other side of the protocol) is parsed through here. nlohmann's parser itself is
// iterative, but copying, comparing and dumping a value recurse once per level, so a line nested
// 100,000 deep that parsed fine would overflow the stack of whoever copies it next. Text nested
// deeper than the limit is refused before it is parsed.

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string_view>

namespace amlnode {

// Deeper than anything the protocol, the job model or a run's metrics use (at most ten levels).
inline constexpr std::size_t kMaxJsonDepth = 64;

// Whether the arrays and objects of `text` nest at most `max_depth` levels (strings, with their
// escapes, are skipped). Linear in the text and never recursive; text that is not JSON at all may
// pass, and is then refused by the parser.
bool json_depth_within(std::string_view text, std::size_t max_depth = kMaxJsonDepth);

// The parsed value, or a discarded one (is_discarded()) when `text` is not JSON or nests deeper
// than `max_depth`. Never throws.
nlohmann::json parse_untrusted_json(std::string_view text, std::size_t max_depth = kMaxJsonDepth);

}  // namespace amlnode
