#include "controlplane/run_metrics.h"

#include <algorithm>
#include <deque>
#include <map>

#include "common/json.h"
#include "controlplane/log_attempts.h"
#include "metrics/script_metrics.h"

namespace amlnode::controlplane {

using nlohmann::json;

namespace {

constexpr std::size_t kResourcesReadBytes = 64 * 1024;

// The last `bytes` of a stream, from its first whole line; `cut` says whether anything was left
// out before it.
std::string tail_of(const LogStreams& logs, const std::string& run_id, const std::string& stream,
                    std::size_t bytes, bool& cut) {
  std::uint64_t length = logs.length(run_id, stream);
  std::uint64_t offset = length > bytes ? length - bytes : 0;
  auto text = logs.read(run_id, stream, offset, bytes);
  cut = offset > 0;
  if (!text.ok()) return {};
  std::string out = std::move(*text);
  if (offset > 0) {
    auto newline = out.find('\n');
    out.erase(0, newline == std::string::npos ? out.size() : newline + 1);
  }
  return out;
}

// A record's point: its value (or values, or row), step and time.
json point_of(const json& record) {
  json point = json::object();
  for (const char* key : {"value", "values", "row", "step", "time"}) {
    if (record.contains(key)) point[key] = record[key];
  }
  return point;
}

struct Series {
  std::string kind;
  std::uint64_t count = 0;
  std::deque<json> values;  // the last kMaxValuesPerMetric
};

void add_record(std::map<std::string, Series>& series, const json& record) {
  const std::string name = record["name"].get<std::string>();
  auto found = series.find(name);
  if (found == series.end()) {
    if (series.size() >= kMaxMetricNames) return;
    found = series.emplace(name, Series{record.value("kind", "scalar"), 0, {}}).first;
  }
  Series& entry = found->second;
  ++entry.count;
  entry.values.push_back(point_of(record));
  if (entry.values.size() > kMaxValuesPerMetric) entry.values.pop_front();
}

json series_json(const std::map<std::string, Series>& series) {
  json metrics = json::object();
  for (const auto& [name, entry] : series) {
    metrics[name] = {{"kind", entry.kind},
                     {"count", entry.count},
                     {"last", entry.values.back()},
                     {"values", json::array()}};
    json& values = metrics[name]["values"];
    for (const auto& value : entry.values) values.push_back(value);
  }
  return metrics;
}

}  // namespace

namespace fs = std::filesystem;

json run_metrics_json(const LogStreams& logs, const std::string& run_id) {
  bool truncated = false;
  // A run queued again (its node lost or preempted) has earlier attempts: their records come
  // first, so the metrics of every attempt are appended in the order they were logged, as Azure
  // ML shows a restarted run's. One budget of kMetricsReadBytes covers them all, newest first;
  // at most kMaxMetricAttempts earlier attempts are read.
  std::size_t budget = kMetricsReadBytes;
  bool cut = false;
  std::string text = tail_of(logs, run_id, "system_logs/metrics.jsonl", budget, cut);
  truncated = cut;
  budget -= std::min(budget, text.size());
  fs::path run_dir = logs.run_dir(run_id);
  int attempts = archived_attempts(run_dir);
  LogStreams earlier(attempts_root(run_dir));
  for (int n = attempts; n >= 1 && n > attempts - kMaxMetricAttempts; --n) {
    if (budget == 0) {
      truncated = true;
      break;
    }
    std::string older =
        tail_of(earlier, std::to_string(n), "system_logs/metrics.jsonl", budget, cut);
    truncated = truncated || cut;
    budget -= std::min(budget, older.size());
    if (!older.empty() && older.back() != '\n') older += '\n';
    text = older + text;
  }
  if (attempts > kMaxMetricAttempts) truncated = true;
  std::map<std::string, Series> series;
  // Child runs a script made (run.create_children) log to the same file with their own run_id:
  // their series are kept apart, per child, at most kMaxChildRuns of them.
  std::map<std::string, std::map<std::string, Series>> children;
  // The node reads the same lines for /metrics: one parser, so a line means the same to both.
  auto scan = metrics::scan_metric_records(text, [&](const json& record) {
    auto owner = record.find("run_id");
    if (owner == record.end() || !owner->is_string() || owner->get<std::string>() == run_id)
      return add_record(series, record);
    const std::string& child = owner->get_ref<const std::string&>();
    if (children.size() >= kMaxChildRuns && !children.count(child)) return;
    add_record(children[child], record);
  });
  cut = false;
  std::string resources =
      tail_of(logs, run_id, "system_logs/resources.jsonl", kResourcesReadBytes, cut);
  json last = nullptr;
  std::size_t line_end = resources.rfind('\n');
  while (line_end != std::string::npos && line_end > 0) {
    std::size_t line_start = resources.rfind('\n', line_end - 1);
    line_start = line_start == std::string::npos ? 0 : line_start + 1;
    auto sample =
        parse_untrusted_json(std::string_view(resources).substr(line_start, line_end - line_start));
    if (sample.is_object() && sample.contains("cpu_seconds")) {
      last = sample;
      break;
    }
    line_end = line_start > 0 ? line_start - 1 : std::string::npos;
  }
  json child_metrics = json::object();
  for (const auto& [child, child_series] : children)
    child_metrics[child] = series_json(child_series);
  return {{"run_id", run_id},       {"metrics", series_json(series)}, {"children", child_metrics},
          {"truncated", truncated}, {"skipped_lines", scan.skipped},  {"resources", last}};
}

}  // namespace amlnode::controlplane
