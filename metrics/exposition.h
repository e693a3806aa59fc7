#pragma once

// The Prometheus text exposition format, version 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/): `# HELP` and `# TYPE` before each
// family, the samples of a family together, label values escaped (\\, \", \n), counters named
// with `_total`. Rendering appends to a caller's string, which keeps its capacity between scrapes.

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

#include "metrics/samples.h"

namespace amlnode::metrics {

inline constexpr const char* kExpositionContentType = "text/plain; version=0.0.4; charset=utf-8";

struct Label {
  std::string_view name;
  std::string_view value;
};

class ExpositionWriter {
 public:
  explicit ExpositionWriter(std::string& out) : out_(out) {}

  // Starts a family; `type` is "counter" or "gauge".
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, std::initializer_list<Label> labels, double value);
  void sample(std::string_view name, std::initializer_list<Label> labels, std::uint64_t value);

 private:
  void labels(std::initializer_list<Label> labels);
  std::string& out_;
};

// Appends a label value with \\, \" and \n escaped.
void append_escaped_label(std::string& out, std::string_view value);
// Appends a sample value: integers exactly, others in the shortest form that reads back the
// same, NaN and +Inf/-Inf as the format spells them.
void append_value(std::string& out, double value);

// The scalars one run's script logged, as amlnode_run_metric{run_id, name}.
struct RunScriptMetrics {
  std::string_view run_id;
  std::span<const ScriptMetric> metrics;
};

// What a scrape shows: the node (with its state dir's filesystem labelled by `state_dir`), its
// GPUs, the runs it holds, and what their scripts logged.
struct ExpositionInput {
  const NodeSample* node = nullptr;  // nullptr before the first sample
  std::string_view state_dir;
  std::span<const GpuSample> gpus;
  std::span<const RunSample> runs;
  std::span<const RunScriptMetrics> script_metrics = {};
};

// Appends the whole exposition to `out`.
void render_exposition(std::string& out, const ExpositionInput& input);

}  // namespace amlnode::metrics
