// What bench/metrics_cost.py measures: the CPU one node sample costs, and the CPU one render of
// the exposition costs, each as user + system time (getrusage) over N repetitions.
//
//   metrics_sample_cost sample N STATE_DIR     N node samples (with the GPUs when NVML loads)
//   metrics_sample_cost serve STATE_DIR        serves /metrics on 127.0.0.1:0 (port on stdout),
//                                              sampling once a second, until stdin closes
//
// Prints one JSON object: {"samples": N, "cpu_seconds": S, "per_sample_ms": MS}.

#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "metrics/exposition.h"
#include "metrics/http_endpoint.h"
#include "metrics/node_sampler.h"
#include "metrics/nvml.h"

using namespace amlnode::metrics;

namespace {

double cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int measure_samples(long n, const char* state_dir) {
  NodeSampler sampler(state_dir);
  auto gpu = load_nvml(nvml_library_name());
  NodeSample sample;
  std::vector<GpuSample> gpus;
  std::vector<GpuProcess> processes;
  sampler.sample(sample, now_ms());  // sizes the vectors, as the daemon's first sample does
  double start = cpu_seconds();
  for (long i = 0; i < n; ++i) {
    sampler.sample(sample, now_ms());
    if (gpu) gpu->sample(gpus, processes);
  }
  double used = cpu_seconds() - start;
  std::printf("{\"samples\": %ld, \"cpu_seconds\": %.6f, \"per_sample_ms\": %.6f}\n", n, used,
              used * 1000 / static_cast<double>(n));
  return 0;
}

// Serves the node's exposition the way the daemon does: a sample every second, scrapes render the
// latest one.
int serve(const char* state_dir) {
  boost::asio::io_context io;
  NodeSampler sampler(state_dir);
  NodeSample sample;
  sampler.sample(sample, now_ms());
  MetricsEndpoint endpoint(io, {"127.0.0.1", 0, true}, [&](std::string& out) {
    render_exposition(out, {&sample, state_dir, {}, {}});
  });
  if (!endpoint.start().ok()) return 1;
  std::printf("%u\n", endpoint.port());
  std::fflush(stdout);
  boost::asio::steady_timer timer(io);
  std::function<void()> tick = [&] {
    timer.expires_after(std::chrono::seconds(1));
    timer.async_wait([&](boost::system::error_code ec) {
      if (ec) return;
      sampler.sample(sample, now_ms());
      tick();
    });
  };
  tick();
  boost::asio::posix::stream_descriptor input(io, ::dup(0));
  char byte;
  input.async_read_some(boost::asio::buffer(&byte, 1), [&](boost::system::error_code, std::size_t) {
    endpoint.stop();
    timer.cancel();
  });
  io.run();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "sample" && argc == 4) return measure_samples(std::atol(argv[2]), argv[3]);
  if (mode == "serve" && argc == 3) return serve(argv[2]);
  std::fprintf(stderr, "usage: metrics_sample_cost sample N STATE_DIR | serve STATE_DIR\n");
  return 2;
}
