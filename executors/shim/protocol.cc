#include "executors/shim/protocol.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/json.h"

// The three files are plain JSON objects whose keys are the struct fields in snake_case. Optional
// fields are left out when they have no value; readers accept a missing key and `null` alike, so a
// hand-written file works too. Every reader names the offending field in its error, because the
// person reading it is usually looking at the file itself.

namespace amlnode::executors {
namespace {

using nlohmann::json;

// Launch specs carry arbitrary argv and environment strings. nlohmann refuses to dump invalid UTF-8
// by throwing; replacing such bytes with U+FFFD is better than taking the caller down, and is
// documented in docs/shim.md.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Thrown only inside this file and turned into an Error at the public functions.
struct FieldError {
  std::string message;
};

[[noreturn]] void fail(const std::string& field, const std::string& expected) {
  throw FieldError{"field '" + field + "' must be " + expected};
}

const json* find(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string get_string(const json& object, const char* key, bool required) {
  const json* value = find(object, key);
  if (!value) {
    if (required) fail(key, "a string (it is missing)");
    return {};
  }
  if (!value->is_string()) fail(key, "a string");
  return value->get<std::string>();
}

std::string get_required_path(const json& object, const char* key) {
  auto text = get_string(object, key, true);
  if (text.empty()) fail(key, "a non-empty path");
  return text;
}

std::vector<std::string> get_string_array(const json& object, const char* key) {
  const json* value = find(object, key);
  if (!value) return {};
  if (!value->is_array()) fail(key, "an array of strings");
  std::vector<std::string> out;
  out.reserve(value->size());
  for (std::size_t i = 0; i < value->size(); ++i) {
    const json& item = (*value)[i];
    if (!item.is_string()) fail(std::string(key) + "[" + std::to_string(i) + "]", "a string");
    out.push_back(item.get<std::string>());
  }
  return out;
}

bool get_bool(const json& object, const char* key) {
  const json* value = find(object, key);
  if (!value) return false;
  if (!value->is_boolean()) fail(key, "true or false");
  return value->get<bool>();
}

std::optional<double> get_seconds(const json& object, const char* key) {
  const json* value = find(object, key);
  if (!value) return std::nullopt;
  if (!value->is_number()) fail(key, "a number of seconds");
  double seconds = value->get<double>();
  if (!std::isfinite(seconds) || seconds < 0) fail(key, "a non-negative number of seconds");
  return seconds;
}

template <class Int>
std::optional<Int> get_integer(const json& object, const char* key, long long min) {
  const json* value = find(object, key);
  if (!value) return std::nullopt;
  if (!value->is_number_integer()) fail(key, "an integer");
  if (value->is_number_unsigned()) {
    auto n = value->get<unsigned long long>();
    if (n > static_cast<unsigned long long>(std::numeric_limits<Int>::max())) fail(key, "smaller");
    return static_cast<Int>(n);
  }
  auto n = value->get<long long>();
  if (n < min) fail(key, "at least " + std::to_string(min));
  if (static_cast<long double>(n) > static_cast<long double>(std::numeric_limits<Int>::max())) {
    fail(key, "smaller");
  }
  return static_cast<Int>(n);
}

template <class Int>
Int get_required_integer(const json& object, const char* key, long long min) {
  auto value = get_integer<Int>(object, key, min);
  if (!value) fail(key, "an integer (it is missing)");
  return *value;
}

// Parses `text` as a JSON object and runs `read` on it, turning every failure into an Error whose
// message starts with `what` ("launch spec", ...).
template <class T, class Read>
Result<T> parse_object(const std::string& text, const char* what, const char* code, Read read) {
  json j = parse_untrusted_json(text);
  if (j.is_discarded()) return Error{code, std::string(what) + " is not valid JSON"};
  if (!j.is_object()) return Error{code, std::string(what) + " must be a JSON object"};
  try {
    return read(j);
  } catch (const FieldError& e) {
    return Error{code, std::string(what) + ": " + e.message};
  } catch (const json::exception& e) {
    return Error{code, std::string(what) + ": " + e.what()};
  }
}

std::optional<ExitReason> reason_from_string(const std::string& s) {
  for (auto r : {ExitReason::Exited, ExitReason::Signaled, ExitReason::Timeout,
                 ExitReason::Canceled, ExitReason::SpawnFailed}) {
    if (to_string(r) == s) return r;
  }
  return std::nullopt;
}

}  // namespace

std::string to_string(ExitReason reason) {
  switch (reason) {
    case ExitReason::Exited:
      return "Exited";
    case ExitReason::Signaled:
      return "Signaled";
    case ExitReason::Timeout:
      return "Timeout";
    case ExitReason::Canceled:
      return "Canceled";
    case ExitReason::SpawnFailed:
      return "SpawnFailed";
  }
  return "Unknown";
}

namespace {

// At most this many ranks in one launch spec: far above any node's process count, and it bounds
// what a hand-written spec can make the shim start.
constexpr std::size_t kMaxRanks = 4096;

// The objects of the array at `key` (none when it is missing), at most kMaxRanks of them.
std::vector<const json*> rank_objects(const json& j, const char* key) {
  std::vector<const json*> objects;
  const json* list = find(j, key);
  if (!list) return objects;
  if (!list->is_array() || list->size() > kMaxRanks)
    fail(key, "an array of at most " + std::to_string(kMaxRanks) + " objects");
  for (const auto& entry : *list) {
    if (!entry.is_object()) fail(key, "an array of objects");
    objects.push_back(&entry);
  }
  return objects;
}

std::vector<RankLaunch> get_ranks(const json& j) {
  std::vector<RankLaunch> ranks;
  for (const json* entry : rank_objects(j, "ranks")) {
    RankLaunch rank;
    rank.rank = get_required_integer<int>(*entry, "rank", 0);
    rank.argv = get_string_array(*entry, "argv");
    if (rank.argv.empty() || rank.argv[0].empty())
      fail("ranks[].argv", "a non-empty array whose first element names the program");
    rank.env = get_string_array(*entry, "env");
    rank.log_path = get_required_path(*entry, "log_path");
    ranks.push_back(std::move(rank));
  }
  return ranks;
}

}  // namespace

std::string launch_spec_to_json(const LaunchSpec& spec) {
  json j = {
      {"argv", spec.argv},
      {"env", spec.env},
      {"cwd", spec.cwd.string()},
      {"log_path", spec.log_path.string()},
      {"state_path", spec.state_path.string()},
      {"exit_path", spec.exit_path.string()},
      {"kill_grace_seconds", spec.kill_grace_seconds},
  };
  if (spec.deadline_seconds) j["deadline_seconds"] = *spec.deadline_seconds;
  if (!spec.stderr_path.empty()) j["stderr_path"] = spec.stderr_path.string();
  if (spec.uid) j["uid"] = *spec.uid;
  if (spec.gid) j["gid"] = *spec.gid;
  if (spec.caller_syncs_outcome) j["caller_syncs_outcome"] = true;
  if (spec.cgroup) j["cgroup"] = spec.cgroup->string();
  if (spec.inherit_env) j["inherit_env"] = true;
  if (!spec.ranks.empty()) {
    json ranks = json::array();
    for (const auto& rank : spec.ranks) {
      ranks.push_back({{"rank", rank.rank},
                       {"argv", rank.argv},
                       {"env", rank.env},
                       {"log_path", rank.log_path.string()}});
    }
    j["ranks"] = ranks;
  }
  return dump(j);
}

Result<LaunchSpec> launch_spec_from_json(const std::string& text) {
  return parse_object<LaunchSpec>(text, "launch spec", "InvalidLaunchSpec", [](const json& j) {
    LaunchSpec spec;
    spec.argv = get_string_array(j, "argv");
    if (spec.argv.empty() || spec.argv[0].empty()) {
      fail("argv", "a non-empty array whose first element names the program");
    }
    spec.env = get_string_array(j, "env");
    spec.cwd = get_string(j, "cwd", false);
    spec.log_path = get_required_path(j, "log_path");
    if (j.contains("stderr_path")) spec.stderr_path = get_required_path(j, "stderr_path");
    spec.state_path = get_required_path(j, "state_path");
    spec.exit_path = get_required_path(j, "exit_path");
    spec.deadline_seconds = get_seconds(j, "deadline_seconds");
    if (auto grace = get_seconds(j, "kill_grace_seconds")) spec.kill_grace_seconds = *grace;
    spec.uid = get_integer<uid_t>(j, "uid", 0);
    spec.gid = get_integer<gid_t>(j, "gid", 0);
    spec.caller_syncs_outcome = get_bool(j, "caller_syncs_outcome");
    if (j.contains("cgroup")) spec.cgroup = get_required_path(j, "cgroup");
    spec.ranks = get_ranks(j);
    spec.inherit_env = get_bool(j, "inherit_env");
    return spec;
  });
}

std::string shim_state_to_json(const ShimState& state) {
  return dump(json{
      {"shim_pid", state.shim_pid},
      {"shim_start_time", state.shim_start_time},
      {"child_pid", state.child_pid},
      {"started_at_ms", state.started_at_ms},
  });
}

Result<ShimState> shim_state_from_json(const std::string& text) {
  return parse_object<ShimState>(text, "shim state", "InvalidShimState", [](const json& j) {
    ShimState state;
    state.shim_pid = get_required_integer<pid_t>(j, "shim_pid", 1);
    state.shim_start_time = get_required_integer<unsigned long long>(j, "shim_start_time", 0);
    state.child_pid = get_required_integer<pid_t>(j, "child_pid", 1);
    state.started_at_ms = get_required_integer<long long>(j, "started_at_ms", 0);
    return state;
  });
}

std::string exit_record_to_json(const ExitRecord& record) {
  json j = {
      {"reason", to_string(record.reason)},
      {"started_at_ms", record.started_at_ms},
      {"ended_at_ms", record.ended_at_ms},
  };
  if (record.exit_code) j["exit_code"] = *record.exit_code;
  if (record.signal) j["signal"] = *record.signal;
  if (!record.error.empty()) j["error"] = record.error;
  if (!record.ranks.empty()) {
    json ranks = json::array();
    for (const auto& rank : record.ranks) {
      json entry = {{"rank", rank.rank}, {"ended_at_ms", rank.ended_at_ms}};
      if (rank.exit_code) entry["exit_code"] = *rank.exit_code;
      if (rank.signal) entry["signal"] = *rank.signal;
      ranks.push_back(entry);
    }
    j["ranks"] = ranks;
  }
  if (record.failed_rank) j["failed_rank"] = *record.failed_rank;
  return dump(j);
}

Result<ExitRecord> exit_record_from_json(const std::string& text) {
  return parse_object<ExitRecord>(text, "exit record", "InvalidExitRecord", [](const json& j) {
    ExitRecord record;
    auto reason = reason_from_string(get_string(j, "reason", true));
    if (!reason) fail("reason", "one of Exited, Signaled, Timeout, Canceled, SpawnFailed");
    record.reason = *reason;
    record.exit_code = get_integer<int>(j, "exit_code", std::numeric_limits<int>::min());
    record.signal = get_integer<int>(j, "signal", 1);
    record.started_at_ms = get_integer<long long>(j, "started_at_ms", 0).value_or(0);
    record.ended_at_ms = get_integer<long long>(j, "ended_at_ms", 0).value_or(0);
    record.error = get_string(j, "error", false);
    for (const json* entry : rank_objects(j, "ranks")) {
      RankExit rank;
      rank.rank = get_required_integer<int>(*entry, "rank", 0);
      rank.exit_code = get_integer<int>(*entry, "exit_code", std::numeric_limits<int>::min());
      rank.signal = get_integer<int>(*entry, "signal", 1);
      rank.ended_at_ms = get_integer<long long>(*entry, "ended_at_ms", 0).value_or(0);
      record.ranks.push_back(rank);
    }
    record.failed_rank = get_integer<int>(j, "failed_rank", 0);
    return record;
  });
}

}  // namespace amlnode::executors
