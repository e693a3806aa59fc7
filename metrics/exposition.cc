#include "metrics/exposition.h"

#include <charconv>
#include <cmath>
#include <tuple>
#include <utility>

#include "metrics/node_sampler.h"

namespace amlnode::metrics {

namespace {

void append_number(std::string& out, std::uint64_t value) {
  char digits[24];
  auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
  out.append(digits, end);
}

void append_help(std::string& out, std::string_view text) {
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// A small decimal as a label value ("0", "17").
struct IndexText {
  explicit IndexText(std::uint64_t value) {
    length = static_cast<std::size_t>(std::to_chars(text, text + sizeof text, value).ptr - text);
  }
  std::string_view view() const { return {text, length}; }
  char text[24];
  std::size_t length;
};

double seconds(std::uint64_t ticks) {
  return static_cast<double>(ticks) / ticks_per_second();
}

void render_cpu_modes(ExpositionWriter& w, std::string_view name, const CpuTicks& t,
                      std::string_view cpu) {
  const std::pair<const char*, std::uint64_t> modes[] = {
      {"user", t.user},     {"nice", t.nice}, {"system", t.system},   {"idle", t.idle},
      {"iowait", t.iowait}, {"irq", t.irq},   {"softirq", t.softirq}, {"steal", t.steal}};
  for (const auto& [mode, ticks] : modes) {
    if (cpu.empty()) {
      w.sample(name, {{"mode", mode}}, seconds(ticks));
    } else {
      w.sample(name, {{"cpu", cpu}, {"mode", mode}}, seconds(ticks));
    }
  }
}

void render_cpu(ExpositionWriter& w, const NodeSample& n) {
  w.family("amlnode_node_cpu_seconds_total", "counter",
           "Seconds all CPUs together spent in each mode.");
  render_cpu_modes(w, "amlnode_node_cpu_seconds_total", n.cpu, {});
  w.family("amlnode_node_cpu_core_seconds_total", "counter",
           "Seconds each CPU spent in each mode.");
  for (std::size_t i = 0; i < n.cores.size(); ++i)
    render_cpu_modes(w, "amlnode_node_cpu_core_seconds_total", n.cores[i], IndexText(i).view());
  w.family("amlnode_node_cpus", "gauge", "Online CPUs.");
  w.sample("amlnode_node_cpus", {}, static_cast<std::uint64_t>(n.cores.size()));
}

void gauge(ExpositionWriter& w, std::string_view name, std::string_view help, double value) {
  w.family(name, "gauge", help);
  w.sample(name, {}, value);
}

void gauge(ExpositionWriter& w, std::string_view name, std::string_view help, std::uint64_t value) {
  w.family(name, "gauge", help);
  w.sample(name, {}, value);
}

void counter(ExpositionWriter& w, std::string_view name, std::string_view help,
             std::uint64_t value) {
  w.family(name, "counter", help);
  w.sample(name, {}, value);
}

void render_memory_and_load(ExpositionWriter& w, const NodeSample& n) {
  gauge(w, "amlnode_node_memory_total_bytes", "Total usable memory (MemTotal).", n.memory_total);
  gauge(w, "amlnode_node_memory_free_bytes", "Unused memory (MemFree).", n.memory_free);
  gauge(w, "amlnode_node_memory_available_bytes",
        "Memory available for new work without swapping (MemAvailable).", n.memory_available);
  gauge(w, "amlnode_node_memory_buffers_bytes", "Block device buffers (Buffers).",
        n.memory_buffers);
  gauge(w, "amlnode_node_memory_cached_bytes", "Page cache (Cached).", n.memory_cached);
  gauge(w, "amlnode_node_swap_total_bytes", "Swap space (SwapTotal).", n.swap_total);
  gauge(w, "amlnode_node_swap_free_bytes", "Unused swap space (SwapFree).", n.swap_free);
  gauge(w, "amlnode_node_load1", "Load average over 1 minute.", n.load1);
  gauge(w, "amlnode_node_load5", "Load average over 5 minutes.", n.load5);
  gauge(w, "amlnode_node_load15", "Load average over 15 minutes.", n.load15);
  gauge(w, "amlnode_node_processes", "Live processes.", n.processes);
  gauge(w, "amlnode_node_procs_running", "Runnable tasks.", n.procs_running);
  gauge(w, "amlnode_node_procs_blocked", "Tasks blocked on I/O.", n.procs_blocked);
  counter(w, "amlnode_node_forks_total", "Processes created since boot.", n.forks);
  counter(w, "amlnode_node_context_switches_total", "Context switches since boot.",
          n.context_switches);
}

void render_filesystem(ExpositionWriter& w, const NodeSample& n, std::string_view path) {
  const std::tuple<const char*, const char*, std::uint64_t> rows[] = {
      {"amlnode_node_filesystem_size_bytes", "Size of the state dir's filesystem.", n.fs_size},
      {"amlnode_node_filesystem_free_bytes", "Free bytes of the state dir's filesystem.",
       n.fs_free},
      {"amlnode_node_filesystem_avail_bytes",
       "Bytes of the state dir's filesystem available to unprivileged users.", n.fs_available},
      {"amlnode_node_filesystem_files", "Inodes of the state dir's filesystem.", n.fs_files},
      {"amlnode_node_filesystem_files_free", "Free inodes of the state dir's filesystem.",
       n.fs_files_free}};
  for (const auto& [name, help, value] : rows) {
    w.family(name, "gauge", help);
    w.sample(name, {{"path", path}}, value);
  }
}

void render_disk(ExpositionWriter& w, const NodeSample& n) {
  if (!n.disk_found) return;
  std::string_view device = n.disk_name;
  const std::tuple<const char*, const char*, double> rows[] = {
      {"amlnode_node_disk_reads_completed_total", "Reads completed by the state dir's disk.",
       static_cast<double>(n.disk_reads)},
      {"amlnode_node_disk_read_bytes_total", "Bytes read from the state dir's disk.",
       static_cast<double>(n.disk_read_bytes)},
      {"amlnode_node_disk_writes_completed_total", "Writes completed by the state dir's disk.",
       static_cast<double>(n.disk_writes)},
      {"amlnode_node_disk_written_bytes_total", "Bytes written to the state dir's disk.",
       static_cast<double>(n.disk_written_bytes)},
      {"amlnode_node_disk_io_time_seconds_total", "Seconds the state dir's disk was busy.",
       static_cast<double>(n.disk_io_ms) / 1000.0}};
  for (const auto& [name, help, value] : rows) {
    w.family(name, "counter", help);
    w.sample(name, {{"device", device}}, value);
  }
}

void render_net(ExpositionWriter& w, const NodeSample& n) {
  using Field = std::uint64_t NetDevice::*;
  const std::tuple<const char*, const char*, Field> rows[] = {
      {"amlnode_node_network_receive_bytes_total", "Bytes received.", &NetDevice::rx_bytes},
      {"amlnode_node_network_receive_packets_total", "Packets received.", &NetDevice::rx_packets},
      {"amlnode_node_network_receive_errs_total", "Receive errors.", &NetDevice::rx_errors},
      {"amlnode_node_network_receive_drop_total", "Received packets dropped.",
       &NetDevice::rx_dropped},
      {"amlnode_node_network_transmit_bytes_total", "Bytes sent.", &NetDevice::tx_bytes},
      {"amlnode_node_network_transmit_packets_total", "Packets sent.", &NetDevice::tx_packets},
      {"amlnode_node_network_transmit_errs_total", "Transmit errors.", &NetDevice::tx_errors},
      {"amlnode_node_network_transmit_drop_total", "Sent packets dropped.",
       &NetDevice::tx_dropped}};
  for (const auto& [name, help, field] : rows) {
    w.family(name, "counter", help);
    for (const auto& dev : n.net) w.sample(name, {{"device", dev.name}}, dev.*field);
  }
}

void render_gpus(ExpositionWriter& w, std::span<const GpuSample> gpus) {
  if (gpus.empty()) return;
  struct Row {
    const char* name;
    const char* type;
    const char* help;
    double (*value)(const GpuSample&);
    bool (*known)(const GpuSample&);
  };
  static const Row rows[] = {
      {"amlnode_gpu_utilization_ratio", "gauge", "Share of time a kernel ran (0 to 1).",
       [](const GpuSample& g) { return g.utilization_percent / 100.0; },
       [](const GpuSample& g) { return g.utilization_percent != GpuSample::unknown; }},
      {"amlnode_gpu_memory_utilization_ratio", "gauge",
       "Share of time GPU memory was read or written (0 to 1).",
       [](const GpuSample& g) { return g.memory_utilization_percent / 100.0; },
       [](const GpuSample& g) { return g.memory_utilization_percent != GpuSample::unknown; }},
      {"amlnode_gpu_memory_total_bytes", "gauge", "GPU memory.",
       [](const GpuSample& g) { return static_cast<double>(g.memory_total); },
       [](const GpuSample& g) { return g.memory_total != GpuSample::unknown; }},
      {"amlnode_gpu_memory_used_bytes", "gauge", "GPU memory in use.",
       [](const GpuSample& g) { return static_cast<double>(g.memory_used); },
       [](const GpuSample& g) { return g.memory_used != GpuSample::unknown; }},
      {"amlnode_gpu_temperature_celsius", "gauge", "GPU core temperature.",
       [](const GpuSample& g) { return static_cast<double>(g.temperature_celsius); },
       [](const GpuSample& g) { return g.temperature_celsius != GpuSample::unknown; }},
      {"amlnode_gpu_power_watts", "gauge", "GPU power draw.",
       [](const GpuSample& g) { return g.power_milliwatts / 1000.0; },
       [](const GpuSample& g) { return g.power_milliwatts != GpuSample::unknown; }},
      {"amlnode_gpu_xid_errors_total", "counter",
       "XID critical errors seen since the agent started.",
       [](const GpuSample& g) { return static_cast<double>(g.xid_errors); },
       [](const GpuSample&) { return true; }},
      {"amlnode_gpu_last_xid", "gauge", "The code of the last XID error (0: none).",
       [](const GpuSample& g) { return static_cast<double>(g.last_xid); },
       [](const GpuSample&) { return true; }},
  };
  for (const auto& row : rows) {
    w.family(row.name, row.type, row.help);
    for (const auto& g : gpus) {
      if (!row.known(g)) continue;
      w.sample(row.name, {{"gpu", IndexText(g.index).view()}, {"uuid", g.uuid}, {"name", g.name}},
               row.value(g));
    }
  }
  w.family("amlnode_gpu_ecc_errors_total", "counter",
           "Volatile ECC errors since the driver loaded, by type.");
  for (const auto& g : gpus) {
    IndexText index(g.index);
    if (g.ecc_corrected != GpuSample::unknown)
      w.sample("amlnode_gpu_ecc_errors_total",
               {{"gpu", index.view()}, {"uuid", g.uuid}, {"type", "corrected"}}, g.ecc_corrected);
    if (g.ecc_uncorrected != GpuSample::unknown)
      w.sample("amlnode_gpu_ecc_errors_total",
               {{"gpu", index.view()}, {"uuid", g.uuid}, {"type", "uncorrected"}},
               g.ecc_uncorrected);
  }
}

void render_runs(ExpositionWriter& w, std::span<const RunSample> runs) {
  w.family("amlnode_runs", "gauge", "Runs this node holds whose process is live.");
  w.sample("amlnode_runs", {}, static_cast<std::uint64_t>(runs.size()));
  using Value = double (*)(const RunSample&);
  const std::tuple<const char*, const char*, const char*, Value> rows[] = {
      {"amlnode_run_cpu_seconds_total", "counter", "CPU seconds (user + system) of the run.",
       [](const RunSample& r) { return r.cpu_seconds; }},
      {"amlnode_run_memory_bytes", "gauge", "Resident memory of the run.",
       [](const RunSample& r) { return static_cast<double>(r.memory_bytes); }},
      {"amlnode_run_memory_peak_bytes", "gauge", "Largest resident memory of the run seen.",
       [](const RunSample& r) { return static_cast<double>(r.memory_peak_bytes); }},
      {"amlnode_run_io_read_bytes_total", "counter", "Bytes the run read from storage.",
       [](const RunSample& r) { return static_cast<double>(r.io_read_bytes); }},
      {"amlnode_run_io_write_bytes_total", "counter", "Bytes the run wrote to storage.",
       [](const RunSample& r) { return static_cast<double>(r.io_write_bytes); }},
      {"amlnode_run_processes", "gauge", "Live processes of the run.",
       [](const RunSample& r) { return static_cast<double>(r.processes); }},
      {"amlnode_run_gpu_memory_bytes", "gauge", "GPU memory used by the run's processes.",
       [](const RunSample& r) { return static_cast<double>(r.gpu_memory_bytes); }}};
  for (const auto& [name, type, help, value] : rows) {
    w.family(name, type, help);
    for (const auto& run : runs) w.sample(name, {{"run_id", run.run_id}}, value(run));
  }
}

void render_script_metrics(ExpositionWriter& w, std::span<const RunScriptMetrics> runs) {
  w.family("amlnode_run_metric", "gauge",
           "The last value the run's script logged under each name (amlnode_run.log).");
  for (const auto& run : runs) {
    for (const auto& metric : run.metrics)
      w.sample("amlnode_run_metric", {{"run_id", run.run_id}, {"name", metric.name}}, metric.value);
  }
}

}  // namespace

void append_escaped_label(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void append_value(std::string& out, double value) {
  if (std::isnan(value)) {
    out += "NaN";
  } else if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
  } else if (value == std::floor(value) && std::fabs(value) < 1e15) {
    if (value < 0) out += '-';
    append_number(out, static_cast<std::uint64_t>(std::fabs(value)));
  } else {
    char digits[32];
    auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
    out.append(digits, end);
  }
}

void ExpositionWriter::family(std::string_view name, std::string_view type, std::string_view help) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  append_help(out_, help);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void ExpositionWriter::labels(std::initializer_list<Label> labels) {
  if (labels.size() == 0) return;
  out_ += '{';
  bool first = true;
  for (const auto& label : labels) {
    if (!first) out_ += ',';
    first = false;
    out_ += label.name;
    out_ += "=\"";
    append_escaped_label(out_, label.value);
    out_ += '"';
  }
  out_ += '}';
}

void ExpositionWriter::sample(std::string_view name, std::initializer_list<Label> labels,
                              double value) {
  out_ += name;
  this->labels(labels);
  out_ += ' ';
  append_value(out_, value);
  out_ += '\n';
}

void ExpositionWriter::sample(std::string_view name, std::initializer_list<Label> labels,
                              std::uint64_t value) {
  out_ += name;
  this->labels(labels);
  out_ += ' ';
  append_number(out_, value);
  out_ += '\n';
}

void render_exposition(std::string& out, const ExpositionInput& input) {
  ExpositionWriter w(out);
  if (input.node) {
    render_cpu(w, *input.node);
    render_memory_and_load(w, *input.node);
    render_filesystem(w, *input.node, input.state_dir);
    render_disk(w, *input.node);
    render_net(w, *input.node);
  }
  render_gpus(w, input.gpus);
  render_runs(w, input.runs);
  render_script_metrics(w, input.script_metrics);
}

}  // namespace amlnode::metrics
