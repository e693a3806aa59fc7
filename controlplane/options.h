#pragma once

// How a control plane server is set up: where it listens, where it keeps its state, its
// heartbeat policy and every limit that bounds what a client can make it hold.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "common/clock.h"

namespace amlnode::controlplane {

struct TlsFiles {
  std::filesystem::path certificate_chain;  // PEM
  std::filesystem::path private_key;        // PEM
};

// What the control plane keeps of the logs a node appends (controlplane/log_budgets.h): the rest
// is refused, marked and counted.
struct LogBudgetLimits {
  std::uint64_t stream = 1ull << 30;  // 1 GiB
  std::uint64_t run = 4ull << 30;     // 4 GiB: a run's streams together
  std::uint64_t node = 16ull << 30;   // 16 GiB: the streams of the runs a node holds, together
};

// Every buffer a client can fill, and what happens when it is full.
struct Limits {
  // Request line plus headers; more is answered 431 and the connection closed.
  std::uint32_t max_header_bytes = 16 * 1024;
  // Bodies (protocol.md): over the limit is answered 413 and the connection closed without
  // reading the rest. A Content-Length over the limit is refused before any body byte is read.
  std::uint64_t max_json_body = 1 << 20;
  std::uint64_t max_log_chunk = 8 << 20;
  std::uint64_t max_file_body = 300ull << 20;  // snapshots and outputs, streamed to disk
  // All request bodies held in memory at once (JSON and log chunks, by Content-Length, or the
  // endpoint's limit when chunked). A request that would go over is answered 503 with
  // Retry-After and its connection closed, so memory stays bounded under any number of clients.
  std::uint64_t max_buffered_body_bytes = 256 << 20;
  // Open connections; one more is accepted and closed at once.
  std::size_t max_connections = 10000;
  // The most a log read returns in one answer; the reader continues from the new offset.
  std::size_t max_log_read = 4 << 20;
  // Long polls are cut to these (a larger wait_seconds is not an error).
  std::chrono::seconds max_lease_wait{60};
  std::chrono::seconds max_log_wait{60};
  int max_runs_per_lease = 16;
  // A ParallelRunStep across nodes: one open or exchange body (with the rows it brings), and all
  // of a run's append_row output the control plane keeps until the run ends; an output over it
  // fails the run, naming the limit.
  std::uint64_t max_parallel_body = 16 << 20;
  std::uint64_t max_parallel_output_bytes = 1ull << 30;
  LogBudgetLimits log_budgets;
};

struct Timeouts {
  // A connection with no request arriving for this long is closed. The whole request header must
  // arrive within it too, so a client dripping header bytes cannot hold a connection longer.
  std::chrono::seconds idle{75};
  // Reading a body or writing an answer that makes no progress for this long closes the
  // connection; a slow but steady transfer may take as long as it needs.
  std::chrono::seconds io{30};
  // The TLS handshake.
  std::chrono::seconds handshake{10};
};

struct ServerOptions {
  std::string listen_address = "127.0.0.1";
  std::uint16_t port = 0;  // 0: the system picks one; ControlPlaneServer::port() says which
  std::filesystem::path data_dir;
  std::optional<TlsFiles> tls;

  // The user token. Empty: read <data_dir>/user_token, or make one and write it there (0600).
  std::string user_token;
  // Created as a single-use registration token at start unless it already exists (spent or not).
  std::optional<std::string> registration_token;

  std::chrono::seconds heartbeat_interval{5};
  std::chrono::seconds heartbeat_timeout{30};
  std::chrono::seconds requeue_delay{0};
  // How often lost nodes are looked for. Tests with a manual clock call sweep_now() instead.
  std::chrono::milliseconds sweep_interval{1000};
  // The scale hook (controlplane/scale_hook.h): run under /bin/sh -c when a cluster's target or
  // its leaving nodes change. Empty: none; the decisions still show in get_status().
  std::string scale_hook;
  std::chrono::seconds scale_hook_timeout{60};

  Limits limits;
  Timeouts timeouts;

  // The clock heartbeats are judged by; the real one when unset.
  std::shared_ptr<Clock> clock;
};

}  // namespace amlnode::controlplane
