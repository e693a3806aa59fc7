// The daemon's reader of a run's metrics.jsonl (metrics/script_metrics.h), on real files appended
// to the way the amlnode_run module appends, and the amlnode_run_metric family it feeds.

#include "metrics/script_metrics.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>

#include "metrics/exposition.h"
#include "tests/metrics/metrics_test_support.h"

using namespace amlnode::metrics;
using amlnode::test::sample_value;
using amlnode::test::TempDir;
namespace fs = std::filesystem;

namespace {

void append(const fs::path& file, const std::string& text) {
  std::ofstream(file, std::ios::app | std::ios::binary) << text;
}

std::string scalar(const std::string& name, const std::string& value, int step = 0) {
  return "{\"name\":\"" + name + "\",\"kind\":\"scalar\",\"time\":1763800980.5,\"value\":" + value +
         ",\"step\":" + std::to_string(step) + "}\n";
}

// The value kept under `name`, or nullopt when the name is not kept.
std::optional<double> kept(const ScriptMetricsReader& reader, const std::string& name) {
  for (const auto& metric : reader.metrics()) {
    if (metric.name == name) return metric.value;
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("The script metrics reader keeps each name's last value and reads only what was added",
          "[metrics]") {
  TempDir dir;
  fs::path file = dir / "metrics.jsonl";
  ScriptMetricsReader reader(file);
  reader.read();  // nothing logged yet: no file
  CHECK(reader.metrics().empty());
  CHECK(reader.offset() == 0);

  append(file, scalar("loss", "1.0", 0) + scalar("accuracy", "0.5", 0) + scalar("loss", "0.5", 1));
  reader.read();
  REQUIRE(reader.metrics().size() == 2);
  CHECK(reader.metrics()[0].name == "loss");  // in the order first seen
  CHECK(reader.metrics()[0].value == 0.5);
  CHECK(reader.metrics()[1].name == "accuracy");
  CHECK(reader.offset() == fs::file_size(file));

  append(file, scalar("loss", "0.25", 2));
  reader.read();
  CHECK(kept(reader, "loss") == 0.25);
  CHECK(kept(reader, "accuracy") == 0.5);
  CHECK(reader.offset() == fs::file_size(file));
}

TEST_CASE("A last line without its newline is not consumed until it is whole", "[metrics]") {
  TempDir dir;
  fs::path file = dir / "metrics.jsonl";
  ScriptMetricsReader reader(file);
  std::string first = scalar("loss", "0.5", 0);
  std::string second = scalar("loss", "0.25", 1);
  append(file, first + second.substr(0, 20));
  reader.read();
  CHECK(kept(reader, "loss") == 0.5);
  CHECK(reader.offset() == first.size());
  CHECK(reader.skipped_lines() == 0);

  append(file, second.substr(20, second.size() - 21));  // all but the newline
  reader.read();
  CHECK(kept(reader, "loss") == 0.5);
  CHECK(reader.offset() == first.size());

  append(file, "\n");
  reader.read();
  CHECK(kept(reader, "loss") == 0.25);
  CHECK(reader.offset() == first.size() + second.size());
  CHECK(reader.skipped_lines() == 0);
}

TEST_CASE("Lines that are not numeric scalars are skipped, the module's NaN and bools are not",
          "[metrics]") {
  TempDir dir;
  fs::path file = dir / "metrics.jsonl";
  append(file,
         "not json at all\n"
         "\n"
         "[1,2]\n"
         "{\"name\":7,\"kind\":\"scalar\",\"value\":1}\n"
         "{\"name\":\"loss\",\"kind\":5,\"value\":1}\n"
         "{\"name\":\"loss\",\"kind\":\"scalar\",\"value\":0.5}\n"
         "{\"name\":\"loss\",\"kind\":\"scalar\",\"value\":{\"nested\":1}}\n"
         "{\"name\":\"loss\",\"kind\":\"scalar\"}\n"
         "{\"name\":\"phase\",\"kind\":\"scalar\",\"value\":\"warmup\"}\n"
         "{\"name\":\"accuracies\",\"kind\":\"list\",\"values\":[0.5,0.7]}\n"
         "{\"name\":\"final\",\"kind\":\"row\",\"row\":{\"accuracy\":0.9}}\n"
         "{\"name\":\"\",\"kind\":\"scalar\",\"value\":3}\n"
         "{\"name\":\"grad_norm\",\"kind\":\"scalar\",\"value\":\"NaN\"}\n"
         "{\"name\":\"best\",\"kind\":\"scalar\",\"value\":\"-Infinity\"}\n"
         "{\"name\":\"converged\",\"kind\":\"scalar\",\"value\":true}\n"
         "{\"name\":\"epoch\",\"value\":3}\n"  // no kind: a scalar, as the control plane reads it
         "{\"kind\":\"truncated\",\"name\":\"\",\"time\":3.0}\n");
  ScriptMetricsReader reader(file);
  reader.read();
  CHECK(reader.skipped_lines() == 5);  // the first five: not records
  CHECK(reader.offset() == fs::file_size(file));
  REQUIRE(reader.metrics().size() == 5);
  CHECK(kept(reader, "loss") == 0.5);  // the records after it have no number
  CHECK(std::isnan(*kept(reader, "grad_norm")));
  CHECK(kept(reader, "best") == -std::numeric_limits<double>::infinity());
  CHECK(kept(reader, "converged") == 1.0);
  CHECK(kept(reader, "epoch") == 3.0);
  CHECK_FALSE(kept(reader, "phase"));
  CHECK_FALSE(kept(reader, "accuracies"));
  CHECK_FALSE(kept(reader, "final"));
}

TEST_CASE("The script metrics reader keeps at most its bound of names, the first ones seen",
          "[metrics]") {
  TempDir dir;
  fs::path file = dir / "metrics.jsonl";
  ScriptMetricsReader reader(file, ScriptMetricsReader::kMaxReadBytes, 3);
  for (int i = 0; i < 5; ++i) append(file, scalar("m" + std::to_string(i), std::to_string(i)));
  append(file, scalar("m0", "10") + scalar("m4", "14"));
  reader.read();
  REQUIRE(reader.metrics().size() == 3);
  CHECK(kept(reader, "m0") == 10);  // a kept name still follows the script
  CHECK(kept(reader, "m2") == 2);
  CHECK_FALSE(kept(reader, "m3"));
  CHECK_FALSE(kept(reader, "m4"));
  CHECK(reader.dropped_records() == 3);

  // A name longer than a label should be is not kept and takes no place.
  fs::path other = dir / "other.jsonl";
  ScriptMetricsReader other_reader(other, ScriptMetricsReader::kMaxReadBytes, 1);
  append(other, scalar(std::string(ScriptMetricsReader::kMaxNameBytes + 1, 'x'), "1") +
                    scalar("short", "2"));
  other_reader.read();
  REQUIRE(other_reader.metrics().size() == 1);
  CHECK(other_reader.metrics()[0].name == "short");
  CHECK(other_reader.dropped_records() == 0);
}

TEST_CASE("A read takes at most its bound and the rest comes at the next reads", "[metrics]") {
  TempDir dir;
  fs::path file = dir / "metrics.jsonl";
  std::string text;
  for (int step = 0; step < 20; ++step) text += scalar("loss", std::to_string(step), step);
  append(file, text);
  ScriptMetricsReader reader(file, 200);
  reader.read();
  CHECK(reader.offset() > 0);
  CHECK(reader.offset() <= 200);
  CHECK(kept(reader, "loss") < 19);
  int reads = 1;
  while (reader.offset() < text.size() && reads < 100) {
    reader.read();
    ++reads;
  }
  CHECK(reader.offset() == text.size());
  CHECK(reads > static_cast<int>(text.size() / 200));
  CHECK(kept(reader, "loss") == 19);
  CHECK(reader.skipped_lines() == 0);
}

TEST_CASE("A line longer than a read is skipped through its newline", "[metrics]") {
  TempDir dir;
  fs::path file = dir / "metrics.jsonl";
  ScriptMetricsReader reader(file, 64);
  std::string long_line =
      "{\"name\":\"text\",\"kind\":\"scalar\",\"value\":\"" + std::string(150, 'y') + "\"}\n";
  append(file, "{\"name\":\"a\",\"value\":1}\n" + long_line.substr(0, 100));
  reader.read();  // "a", and the start of the long line, left for the next read
  reader.read();  // a whole read without a newline: the long line is being skipped
  reader.read();
  CHECK(kept(reader, "a") == 1);
  append(file, long_line.substr(100) + "{\"name\":\"b\",\"value\":2}\n");
  for (int i = 0; i < 5; ++i) reader.read();
  CHECK(kept(reader, "b") == 2);
  CHECK(reader.skipped_lines() == 1);
  CHECK(reader.offset() == fs::file_size(file));
}

TEST_CASE("A metrics file rewritten shorter or replaced is read again from its start",
          "[metrics]") {
  TempDir dir;
  fs::path file = dir / "metrics.jsonl";
  ScriptMetricsReader reader(file);
  append(file, scalar("loss", "1") + scalar("loss", "0.5"));
  reader.read();
  CHECK(kept(reader, "loss") == 0.5);

  // Another file at the path, longer than what was read: read from its start, so its first
  // record is not missed.
  fs::remove(file);
  append(file, scalar("first", "1") + scalar("loss", "0.125") + scalar("loss", "0.0625"));
  reader.read();
  CHECK(kept(reader, "first") == 1);
  CHECK(kept(reader, "loss") == 0.0625);
  CHECK(reader.offset() == fs::file_size(file));

  fs::resize_file(file, 0);
  append(file, scalar("acc", "0.9"));
  reader.read();
  CHECK(kept(reader, "acc") == 0.9);
  CHECK(reader.offset() == fs::file_size(file));
}

TEST_CASE("Script metrics are exposed per run and name, escaped, and pass promtool", "[metrics]") {
  TempDir dir;
  std::vector<ScriptMetric> first = {{"loss", 0.25},
                                     {"a \"quoted\" \\ name\nwith a newline", 1},
                                     {"grad_norm", std::numeric_limits<double>::quiet_NaN()}};
  std::vector<ScriptMetric> second = {{"loss", 0.5}};
  std::vector<RunScriptMetrics> runs = {{"exp_1", first}, {"exp_2", second}};
  std::string text;
  render_exposition(text, {nullptr, {}, {}, {}, runs});

  auto checked = amlnode::test::promtool_check(text, dir);
  INFO(text << checked.out << checked.err);
  CHECK(checked.exit_code == 0);
  CHECK(text.find("# TYPE amlnode_run_metric gauge\n") != std::string::npos);
  CHECK(sample_value(text, "amlnode_run_metric{run_id=\"exp_1\",name=\"loss\"}") == 0.25);
  CHECK(sample_value(text, "amlnode_run_metric{run_id=\"exp_2\",name=\"loss\"}") == 0.5);
  CHECK(sample_value(text,
                     "amlnode_run_metric{run_id=\"exp_1\",name=\"a \\\"quoted\\\" \\\\ "
                     "name\\nwith a newline\"}") == 1);
  CHECK(text.find("amlnode_run_metric{run_id=\"exp_1\",name=\"grad_norm\"} NaN\n") !=
        std::string::npos);
}

TEST_CASE("Only a regular file is read: a link or a FIFO in its place is not", "[metrics]") {
  TempDir dir;
  fs::path target = dir.write("elsewhere.jsonl", scalar("secret", "42"));
  fs::path file = dir / "metrics.jsonl";
  fs::create_symlink(target, file);
  ScriptMetricsReader reader(file);
  reader.read();
  CHECK(reader.metrics().empty());

  // A FIFO with no writer: opening it for reading would block the daemon's event loop.
  fs::remove(file);
  REQUIRE(::mkfifo(file.c_str(), 0600) == 0);
  reader.read();
  CHECK(reader.metrics().empty());

  fs::remove(file);
  append(file, scalar("loss", "0.5"));
  reader.read();
  CHECK(kept(reader, "loss") == 0.5);
}
