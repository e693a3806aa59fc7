#include "metrics/exposition.h"

#include <catch2/catch.hpp>

#include "metrics/node_sampler.h"
#include "metrics/run_sampler.h"
#include "tests/metrics/metrics_test_support.h"

using namespace amlnode::metrics;
using amlnode::test::sample_value;
using amlnode::test::TempDir;

TEST_CASE("Label values are escaped as the text format requires", "[metrics]") {
  std::string out;
  append_escaped_label(out, "a\\b\"c\nd");
  CHECK(out == "a\\\\b\\\"c\\nd");
}

TEST_CASE("Sample values are written exactly, with NaN and infinities spelled out", "[metrics]") {
  auto text = [](double v) {
    std::string out;
    append_value(out, v);
    return out;
  };
  CHECK(text(0) == "0");
  CHECK(text(123456789012.0) == "123456789012");
  CHECK(text(-3) == "-3");
  CHECK(text(0.25) == "0.25");
  CHECK(text(1.0 / 3) == "0.3333333333333333");
  CHECK(text(std::numeric_limits<double>::quiet_NaN()) == "NaN");
  CHECK(text(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(text(-std::numeric_limits<double>::infinity()) == "-Inf");
  std::string big;
  ExpositionWriter(big).sample("x_total", {}, std::uint64_t{18446744073709551615ull});
  CHECK(big == "x_total 18446744073709551615\n");
}

TEST_CASE("Families carry HELP and TYPE lines and counters end in _total", "[metrics]") {
  std::string out;
  ExpositionWriter w(out);
  w.family("demo_bytes_total", "counter", "Bytes \\ seen\nso far.");
  w.sample("demo_bytes_total", {{"device", "eth0"}, {"kind", "a\"b"}}, std::uint64_t{5});
  CHECK(out ==
        "# HELP demo_bytes_total Bytes \\\\ seen\\nso far.\n"
        "# TYPE demo_bytes_total counter\n"
        "demo_bytes_total{device=\"eth0\",kind=\"a\\\"b\"} 5\n");
}

TEST_CASE("The node and run exposition passes promtool and shows a real run's use", "[metrics]") {
  TempDir dir;
  amlnode::test::ShimmedWorkload run(
      dir, {"--alloc-mib", "80", "--cpu-ms", "400", "--burners", "1", "--burner-cpu-ms", "100"});
  REQUIRE(run.ready());
  NodeSampler node_sampler(dir.path());
  NodeSample node;
  node_sampler.sample(node, 0);
  RunSampler run_sampler("exp_1763800980_0a1b2c3d", RunRoot{run.shim().pid, run.shim().start_time});
  std::vector<RunSample> runs = {run_sampler.sample(0)};
  std::string text;
  render_exposition(text, {&node, dir.path().string(), {}, runs});

  auto checked = amlnode::test::promtool_check(text, dir);
  INFO(checked.out << checked.err);
  CHECK(checked.exit_code == 0);

  const std::string id = "{run_id=\"exp_1763800980_0a1b2c3d\"}";
  double cpu = sample_value(text, "amlnode_run_cpu_seconds_total" + id);
  CHECK(cpu >= 0.49);  // 0.4 s burnt, 0.1 s by a reaped child
  CHECK(cpu == Approx(run.reported_cpu_seconds()).margin(0.04));
  double memory = sample_value(text, "amlnode_run_memory_bytes" + id);
  CHECK(memory >= 80.0 * (1 << 20));
  CHECK(memory < 100.0 * (1 << 20));
  CHECK(sample_value(text, "amlnode_run_processes" + id) == 1);
  CHECK(sample_value(text, "amlnode_runs") == 1);
  CHECK(sample_value(text, "amlnode_node_memory_total_bytes") == Approx(node.memory_total));
  CHECK(sample_value(text, "amlnode_node_cpus") == node.cores.size());
  CHECK(sample_value(text, "amlnode_node_cpu_core_seconds_total{cpu=\"0\",mode=\"user\"}") >= 0);
  CHECK(sample_value(text, "amlnode_node_filesystem_size_bytes{path=\"" + dir.path().string() +
                               "\"}") == Approx(node.fs_size));
  CHECK(text.find("amlnode_gpu_") == std::string::npos);  // no GPUs: no GPU section
}
