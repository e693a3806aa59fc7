#pragma once

// Reading request bodies: JSON parsing and typed fields, each failure naming the field, what was
// expected and what was found, as protocol.md's 400 answers require.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace amlnode::controlplane {

// The body as a JSON object. An empty body is an empty object.
Result<nlohmann::json> parse_json_object(std::string_view body);

// A field's value, or nullopt when it is absent or null. `path` names it in messages. A number
// over `max` is cut to `max` (waits and the like are capped, not refused); an integer over `max`
// is refused.
Result<std::optional<std::string>> string_field(const nlohmann::json& object, const char* field,
                                                std::string_view path, std::size_t max_bytes);
Result<std::optional<std::int64_t>> integer_field(const nlohmann::json& object, const char* field,
                                                  std::string_view path, std::int64_t min,
                                                  std::int64_t max);
Result<std::optional<double>> number_field(const nlohmann::json& object, const char* field,
                                           std::string_view path, double min, double max);
// An object-valued field (or absent/null).
Result<std::optional<nlohmann::json>> object_field(const nlohmann::json& object, const char* field,
                                                   std::string_view path);

// "missing" as an error for a required field.
Error missing_field(std::string_view path);
// A 400 InvalidRequest with `message`.
Error invalid_request(const std::string& message);
// What a client sent, quoted and cut to 80 bytes, for a message.
std::string shown(const std::string& text);

// Serializes `value`; invalid UTF-8 (say, in a message quoting what a client sent) becomes U+FFFD
// instead of an exception.
std::string dump_json(const nlohmann::json& value);

// JSON's name for the type of `value`, for messages.
std::string json_type_name(const nlohmann::json& value);

}  // namespace amlnode::controlplane
