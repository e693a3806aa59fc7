// Fuzzes the parsing of the metrics a run's script logs (system_logs/metrics.jsonl, written by the
// amlnode_run module or by hand): metrics::scan_metric_records and metrics::scalar_value, which the
// node reads for /metrics, and the control plane's GET /v1/runs/{id}/metrics answer
// (controlplane::run_metrics_json), which reads the same stream and the last resource sample of
// system_logs/resources.jsonl. The input is the content of both streams.
//
// The script owns the file, so any bytes are possible. Beyond not crashing: a scan consumes only
// whole lines, each record it passes on has a string name, and the answer serialises without
// throwing.

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

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

// The streams of the run, written through LogStreams as a node's chunks are. The runs folder and
// the two stream files are made once; for each input the files are emptied and the input appended
// from offset 0, which costs far fewer system calls than removing and making the run's folders.
class Run {
 public:
  Run() : root_(amlnode::fuzz::make_scratch_folder("metrics-lines")), logs_(root_) {
    for (const char* stream : kStreams) write(stream, "");
    for (const auto& entry : fs::directory_iterator(root_ / kRunId / "logs")) {
      files_.push_back(entry.path());
    }
    check(files_.size() == 2, "the run's two streams are not two files");
  }

  const amlnode::controlplane::LogStreams& logs() const { return logs_; }

  void hold(std::string_view text) {
    for (const auto& file : files_) {
      check(::truncate(file.c_str(), 0) == 0, "cannot empty a stream file");
    }
    for (const char* stream : kStreams) write(stream, text);
  }

 private:
  static constexpr const char* kStreams[] = {"system_logs/metrics.jsonl",
                                             "system_logs/resources.jsonl"};

  void write(const char* stream, std::string_view text) {
    auto appended = logs_.append(kRunId, stream, 0, text);
    check(appended.ok() && appended->length == text.size() && !appended->gap,
          "a stream could not be written");
  }

  fs::path root_;
  amlnode::controlplane::LogStreams logs_;
  std::vector<fs::path> files_;
};

// The control plane's answer, from a run whose two streams hold the input.
void answer(std::string_view text) {
  static Run run;
  run.hold(text);
  json metrics = amlnode::controlplane::run_metrics_json(run.logs(), kRunId);
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
