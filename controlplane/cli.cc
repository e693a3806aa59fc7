#include "controlplane/cli.h"

#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <tuple>

#include "common/result.h"
#include "controlplane/server.h"

namespace amlnode::controlplane {

struct ControlPlaneCommand::Flags {
  std::string listen = "127.0.0.1:8631";
  std::string data_dir;
  std::string user_token;
  std::string registration_token;
  std::string tls_cert;
  std::string tls_key;
  int heartbeat_interval = 5;
  int heartbeat_timeout = 30;
  int requeue_delay = 0;
  std::size_t max_connections = 10000;
  int idle_timeout = 75;
  std::string log_level = "info";
  LogBudgetLimits log_budgets;
  std::uint64_t max_parallel_output_bytes = Limits{}.max_parallel_output_bytes;
  std::string scale_hook;
};

namespace {

// "HOST:PORT" or "[IPV6]:PORT".
Result<std::pair<std::string, std::uint16_t>> parse_listen(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos)
    return Error{"Usage", "--listen: expected HOST:PORT, got " + text};
  std::string host = text.substr(0, colon);
  std::string port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535) {
    return Error{"Usage", "--listen: expected a port from 0 to 65535, got " + port};
  }
  return std::make_pair(host, static_cast<std::uint16_t>(std::stoi(port)));
}

// A thousand nodes keep a thousand connections open; the default soft limit is often 1024.
void raise_open_file_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

ControlPlaneCommand::ControlPlaneCommand() : flags_(std::make_unique<Flags>()) {}

ControlPlaneCommand::~ControlPlaneCommand() = default;

void ControlPlaneCommand::add_to(CLI::App& command) {
  Flags& f = *flags_;
  command.add_option("--listen", f.listen, "HOST:PORT to listen on (port 0: any free port)")
      ->capture_default_str();
  command
      .add_option("--data-dir", f.data_dir, "where the database, logs, snapshots and outputs live")
      ->required();
  command.add_option("--user-token", f.user_token,
                     "the user token (default: <data-dir>/user_token, made on first start)");
  command.add_option("--registration-token", f.registration_token,
                     "create this single-use registration token at start (if it never existed)");
  command.add_option("--tls-cert", f.tls_cert,
                     "PEM certificate chain; serves HTTPS with --tls-key");
  command.add_option("--tls-key", f.tls_key, "PEM private key of --tls-cert");
  command
      .add_option("--heartbeat-interval", f.heartbeat_interval,
                  "seconds between a node's heartbeats")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  command
      .add_option("--heartbeat-timeout", f.heartbeat_timeout,
                  "seconds without a heartbeat before a node is lost")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  command
      .add_option("--requeue-delay", f.requeue_delay,
                  "seconds a lost node's runs stay NotResponding before they are queued again")
      ->capture_default_str()
      ->check(CLI::Range(0, 86400));
  command.add_option("--max-connections", f.max_connections, "open connections at most")
      ->capture_default_str();
  command.add_option("--idle-timeout", f.idle_timeout, "seconds an idle connection is kept")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  command.add_option("--log-level", f.log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  for (auto [flag, budget, what] :
       {std::tuple{"--log-budget-stream", &f.log_budgets.stream, "one log stream"},
        {"--log-budget-run", &f.log_budgets.run, "the log streams of one run together"},
        {"--log-budget-node", &f.log_budgets.node,
         "the log streams of the runs one node holds, together"}}) {
    command
        .add_option(flag, *budget,
                    std::string("bytes kept of ") + what +
                        " (suffixes KiB, MiB, GiB); later bytes are refused, marked and counted")
        ->transform(CLI::AsSizeValue(false))
        ->capture_default_str();
  }
  command
      .add_option("--max-parallel-output-bytes", f.max_parallel_output_bytes,
                  "bytes of append_row output kept for one ParallelRunStep across nodes (suffixes "
                  "KiB, MiB, GiB); a run whose output grows past it fails, naming this limit")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  command.add_option("--scale-hook", f.scale_hook,
                     "command run (/bin/sh -c) when a cluster's target node count or its leaving "
                     "nodes change, given them as JSON on stdin; it creates and deletes the VMs "
                     "(docs/compute.md)");
}

int ControlPlaneCommand::run() {
  const Flags& f = *flags_;
  auto listen = parse_listen(f.listen);
  if (!listen) {
    std::fprintf(stderr, "amlnode controlplane: %s\n", listen.error().message.c_str());
    return 2;
  }
  if (f.tls_cert.empty() != f.tls_key.empty()) {
    std::fprintf(stderr, "amlnode controlplane: --tls-cert and --tls-key go together\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(f.log_level));

  ServerOptions options;
  options.listen_address = listen->first;
  options.port = listen->second;
  options.data_dir = std::filesystem::absolute(f.data_dir);
  options.user_token = f.user_token;
  if (!f.registration_token.empty()) options.registration_token = f.registration_token;
  if (!f.tls_cert.empty()) options.tls = TlsFiles{f.tls_cert, f.tls_key};
  options.heartbeat_interval = std::chrono::seconds(f.heartbeat_interval);
  options.heartbeat_timeout = std::chrono::seconds(f.heartbeat_timeout);
  options.requeue_delay = std::chrono::seconds(f.requeue_delay);
  options.limits.max_connections = f.max_connections;
  options.timeouts.idle = std::chrono::seconds(f.idle_timeout);
  options.limits.log_budgets = f.log_budgets;
  options.limits.max_parallel_output_bytes = f.max_parallel_output_bytes;
  options.scale_hook = f.scale_hook;

  raise_open_file_limit();
  // Blocked here, before any thread starts, so every thread inherits the mask and the signals
  // wait for sigwait below instead of killing the process mid-write.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  ControlPlaneServer server(options);
  if (auto started = server.start(); !started) {
    std::fprintf(stderr, "amlnode controlplane: %s\n", started.error().message.c_str());
    return 1;
  }
  std::printf("amlnode controlplane listening on %s://%s:%u\n", options.tls ? "https" : "http",
              options.listen_address.c_str(), static_cast<unsigned>(server.port()));
  if (!server.user_token_file().empty()) {
    std::printf("user token: %s\n", server.user_token_file().c_str());
  }
  std::fflush(stdout);

  int received = 0;
  sigwait(&signals, &received);
  server.stop();
  return 0;
}

int controlplane_main(int argc, char** argv) {
  CLI::App app{
      "amlnode control plane: the reference server nodes register with and pull runs from"};
  ControlPlaneCommand command;
  command.add_to(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return command.run();
}

}  // namespace amlnode::controlplane
