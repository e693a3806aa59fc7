// Fuzzes the parsing of the metrics a run's script logs (system_logs/metrics.jsonl, written by the
// amlnode_run module or by hand): metrics::scan_metric_records and metrics::scalar_value, which the
// node reads for /metrics, and the control plane's GET /v1/runs/{id}/metrics answer
// (controlplane::run_metrics_json), which reads the same stream and the last resource sample of
// system_logs/resources.jsonl. The input is the content of both streams.
//
// The script owns the file, so any bytes are possible. Beyond not crashing: a scan consumes only
// whole lines, each record it passes on has a string name, and the answer serialises without
// throwing.

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>

#include "controlplane/log_streams.h"
#include "controlplane/run_metrics.h"
#include "fuzz/fuzz_support.h"
#include "metrics/script_metrics.h"

namespace {

namespace fs = std::filesystem;
using amlnode::fuzz::check;
using nlohmann::json;

constexpr const char* kRunId = "fuzz_1700000000_0123abcd";

void scan(std::string_view text) {
  std::size_t records = 0;
  auto result = amlnode::metrics::scan_metric_records(text, [&records](const json& record) {
    ++records;
    check(record.is_object() && record.contains("name") && record["name"].is_string(),
          "a record without a string name");
    auto value = amlnode::metrics::scalar_value(record);
    // Only scalars have a value, and only the module's spellings give NaN or infinities.
    if (value && !std::isfinite(*value)) {
      const auto& given = record["value"];
      check(given.is_string(), "a non-finite value that is not one of the module's spellings");
    }
  });
  check(result.consumed <= text.size(), "a scan consumed more than the text");
  check(result.consumed == 0 || text[result.consumed - 1] == '\n',
        "a scan consumed part of a line");
  check(text.substr(result.consumed).find('\n') == std::string_view::npos,
        "a scan left a whole line unread");
  (void)records;
}

// The control plane's answer, from a run whose two streams hold the input. The runs folder is
// made once; the run's streams are removed and written again for each input.
void answer(std::string_view text) {
  static const fs::path runs = amlnode::fuzz::make_scratch_folder("metrics-lines");
  amlnode::fuzz::remove_tree(runs / kRunId);
  amlnode::controlplane::LogStreams logs(runs);
  for (const char* stream : {"system_logs/metrics.jsonl", "system_logs/resources.jsonl"}) {
    auto appended = logs.append(kRunId, stream, 0, text);
    check(appended.ok() && appended->length == text.size(), "the stream could not be written");
  }
  json metrics = amlnode::controlplane::run_metrics_json(logs, kRunId);
  check(metrics["metrics"].is_object() &&
            metrics["metrics"].size() <= amlnode::controlplane::kMaxMetricNames,
        "more metric names than the answer's bound");
  check(!metrics["truncated"].get<bool>(), "a stream under the read limit reported as truncated");
  const auto& resources = metrics["resources"];
  check(resources.is_null() || (resources.is_object() && resources.contains("cpu_seconds")),
        "resources is neither null nor a sample");
  (void)metrics.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text = amlnode::fuzz::as_text(data, size);
  scan(text);
  answer(text);
  return 0;
}
