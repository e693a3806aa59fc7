#pragma once

// The JSON request bodies of docs/protocol.md, parsed and checked. Every failure is an
// InvalidRequest whose message starts with the field's path, e.g. "runs[2].epoch: expected ...".

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"
#include "controlplane/cluster.h"
#include "controlplane/options.h"

namespace amlnode::controlplane {

// POST /v1/nodes/register
Result<NodeRegistration> parse_registration(std::string_view body);

// POST /v1/nodes/{id}/heartbeat
Result<HeartbeatReport> parse_heartbeat(std::string_view body);

// POST /v1/nodes/{id}/lease. max_runs defaults to 1, wait_seconds to 0 (answer at once); a wait
// over the limit is cut to it.
struct LeaseRequest {
  int max_runs = 1;
  double wait_seconds = 0;
  // The port this node would give a run's rendezvous if it became a gang's master: 6105 unless
  // something there holds it (the agent probes before each lease call).
  int rendezvous_port = 6105;
};
Result<LeaseRequest> parse_lease(std::string_view body, const Limits& limits);

// POST /v1/runs/{id}/barrier: the share's epoch, and how long to wait for the others.
struct BarrierRequest {
  std::int64_t epoch = 0;
  double wait_seconds = 0;
};
Result<BarrierRequest> parse_barrier(std::string_view body, const Limits& limits);

// POST /v1/runs/{id}/launches: the host to start `command` on (a share's address).
struct LaunchRequest {
  std::string host;
  std::string command;
  // The caller's name for this launch: asking again with the same key (an answer that was lost)
  // answers the same launch instead of adding one. "" for none.
  std::string key;
};
Result<LaunchRequest> parse_launch(std::string_view body);
// POST /v1/runs/{id}/launches/take: the share's node rank, and how long to wait for a launch.
struct LaunchTake {
  int node_rank = 0;
  double wait_seconds = 0;
};
Result<LaunchTake> parse_launch_take(std::string_view body, const Limits& limits);
// POST /v1/runs/{id}/launches/{n}: running, or exited with its exit code.
struct LaunchUpdate {
  wire::LaunchState state = wire::LaunchState::Running;
  std::optional<int> exit_code;
};
Result<LaunchUpdate> parse_launch_update(std::string_view body);
// POST /v1/runs/{id}/launches/{n}/wait: how long to wait for the launch to exit.
Result<double> parse_launch_wait(std::string_view body, const Limits& limits);

// POST /v1/runs/{id}/status
struct StatusUpdate {
  std::int64_t epoch = 0;
  StatusReport report;
};
Result<StatusUpdate> parse_status(std::string_view body);

// POST /v1/runs
Result<SubmitRequest> parse_submit(std::string_view body, std::size_t max_job_text);

// POST /v1/registration-tokens: {"compute_name"? ("" or absent: any compute), "uses"? (1 to
// 10000, default 1), "ttl_seconds"? (60 s to 366 days; absent: no expiry)}.
Result<Cluster::TokenRequest> parse_registration_token_request(std::string_view body);
// {"token": "..."}: the registration token a user asks about (amlnode attach waits on it).
Result<std::string> parse_registration_token_lookup(std::string_view body);

}  // namespace amlnode::controlplane
