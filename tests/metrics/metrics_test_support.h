#pragma once

// Helpers for the metrics tests: a workload of known resource use under the real amlnode-shim,
// promtool, and a small blocking HTTP client.

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "executors/shim/launcher.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace amlnode::test {

// Every line of a JSON-lines file (metrics.jsonl, resources.jsonl), parsed; a bad line throws.
inline std::vector<nlohmann::json> read_json_lines(const std::filesystem::path& file) {
  std::vector<nlohmann::json> out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// metrics_workload (tests/metrics/workload.cc) started under the real amlnode-shim, as a run's
// process is. The constructor waits until it has done its work and holds its memory; the
// destructor cancels it through the shim and reaps the shim.
class ShimmedWorkload {
 public:
  ShimmedWorkload(const TempDir& dir, const std::vector<std::string>& workload_args);
  ~ShimmedWorkload();
  ShimmedWorkload(const ShimmedWorkload&) = delete;
  ShimmedWorkload& operator=(const ShimmedWorkload&) = delete;

  bool ready() const { return ready_; }
  const executors::LaunchedShim& shim() const { return shim_; }
  // The workload's own pid (the shim's child), from shim.json.
  pid_t child() const;
  // The CPU seconds the workload and its reaped children used, as getrusage told it.
  double reported_cpu_seconds() const;

 private:
  std::filesystem::path dir_;
  executors::LaunchedShim shim_;
  bool ready_ = false;
};

// Runs `promtool check metrics` on `text`; its exit code and output.
CommandResult promtool_check(const std::string& text, const TempDir& dir);

struct HttpAnswer {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
};
// One request over a fresh loopback connection; status 0 when the connection failed.
HttpAnswer http_request(std::uint16_t port, const std::string& method, const std::string& target,
                        const std::string& host = "127.0.0.1");

// The value of the sample whose line starts with `series` (name and labels as written), or -1.
double sample_value(const std::string& exposition, const std::string& series);

}  // namespace amlnode::test
