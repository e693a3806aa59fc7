#include "controlplane/json_fields.h"

#include <cmath>

#include "common/json.h"
#include "controlplane/cluster.h"

namespace amlnode::controlplane {
namespace {

Error invalid(std::string_view path, const std::string& expected, const nlohmann::json& found) {
  return Error{kInvalidRequest,
               std::string(path) + ": expected " + expected + ", got " + json_type_name(found)};
}

}  // namespace

std::string dump_json(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string json_type_name(const nlohmann::json& value) {
  if (value.is_number_integer()) return "integer " + value.dump();
  if (value.is_number()) return "number " + value.dump();
  if (value.is_string()) {
    auto text = value.get<std::string>();
    if (text.size() > 40) text = text.substr(0, 40) + "...";
    return "string " + dump_json(text);
  }
  return value.type_name();
}

Error missing_field(std::string_view path) {
  return Error{kInvalidRequest, std::string(path) + ": required, but missing"};
}

Result<nlohmann::json> parse_json_object(std::string_view body) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return nlohmann::json::object();
  }
  if (!json_depth_within(body)) {
    return Error{kInvalidRequest, "body: nested deeper than " + std::to_string(kMaxJsonDepth) +
                                      " levels of arrays and objects"};
  }
  nlohmann::json value;
  // Exceptions stay inside parsing: the parser's message says where the body went wrong. Not
  // only parse_error: a number too large for a double (1e500) is an out_of_range, which once
  // escaped the request handler and took the server down.
  try {
    value = nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& e) {
    return Error{kInvalidRequest, std::string("body: malformed JSON: ") + e.what()};
  }
  if (!value.is_object()) return invalid("body", "a JSON object", value);
  return value;
}

Result<std::optional<std::string>> string_field(const nlohmann::json& object, const char* field,
                                                std::string_view path, std::size_t max_bytes) {
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return invalid(path, "a string", *it);
  auto text = it->get<std::string>();
  if (text.size() > max_bytes) {
    return Error{kInvalidRequest,
                 std::string(path) + ": longer than " + std::to_string(max_bytes) + " bytes"};
  }
  return std::optional<std::string>(std::move(text));
}

Result<std::optional<std::int64_t>> integer_field(const nlohmann::json& object, const char* field,
                                                  std::string_view path, std::int64_t min,
                                                  std::int64_t max) {
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) return std::optional<std::int64_t>();
  std::string range = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  if (it->is_number_unsigned()) {
    auto value = it->get<std::uint64_t>();
    if (value > static_cast<std::uint64_t>(max) || static_cast<std::int64_t>(value) < min) {
      return invalid(path, range, *it);
    }
    return std::optional<std::int64_t>(static_cast<std::int64_t>(value));
  }
  if (!it->is_number_integer()) return invalid(path, range, *it);
  auto value = it->get<std::int64_t>();
  if (value < min || value > max) return invalid(path, range, *it);
  return std::optional<std::int64_t>(value);
}

Result<std::optional<double>> number_field(const nlohmann::json& object, const char* field,
                                           std::string_view path, double min, double max) {
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) return std::optional<double>();
  if (!it->is_number()) return invalid(path, "a number", *it);
  double value = it->get<double>();
  if (!std::isfinite(value) || value < min) {
    return invalid(path, "a number of at least " + dump_json(min), *it);
  }
  return std::optional<double>(std::min(value, max));
}

Result<std::optional<nlohmann::json>> object_field(const nlohmann::json& object, const char* field,
                                                   std::string_view path) {
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) return std::optional<nlohmann::json>();
  if (!it->is_object()) return invalid(path, "an object", *it);
  return std::optional<nlohmann::json>(*it);
}

Error invalid_request(const std::string& message) {
  return Error{"InvalidRequest", message};
}

std::string shown(const std::string& text) {
  return "\"" + text.substr(0, 80) + "\"";
}

}  // namespace amlnode::controlplane
