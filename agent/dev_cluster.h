#pragma once

// `amlnode dev`: a whole cluster on this machine for trying and developing amlnode, in the manner
// of `nomad agent -dev` or `vault server -dev`. One control plane and N agents on loopback, all
// children of this process, each with its own state under one data folder; every token is made and
// wired. Ctrl-C (SIGINT or SIGTERM) cancels the runs, stops the agents and the control plane and
// leaves no process behind; the data folder is kept. docs/dev.md describes it.

#include <filesystem>
#include <optional>
#include <string>

namespace amlnode::agent {

struct DevClusterOptions {
  int nodes = 2;
  // Empty: a fresh folder under $TMPDIR (else /tmp), kept on exit.
  std::optional<std::filesystem::path> data_dir;
  // Where the control plane listens; port 0 takes a free one.
  std::string listen = "127.0.0.1:0";
  std::string compute = "dev";
  // A node config whose sections (images, environments, docker, log, node) every agent gets; the
  // cluster's own keys (state_dir, control_plane, metrics.listen, node.labels.compute_name) win.
  std::optional<std::filesystem::path> node_config;
  // A job submitted once every node is up; its log is followed to its end.
  std::optional<std::string> submit_job;
  std::string experiment;  // with submit_job; "" is the job's own
  // With submit_job: keep the cluster running after the run ends (else it stops and the exit code
  // is the run's: 0 Completed, 1 otherwise).
  bool stay = false;
};

// Runs the cluster until Ctrl-C (or, with submit_job and not stay, until the run ends). Exit code:
// 0 after a requested stop or a Completed run; 1 when a part failed or the run did not complete;
// 2 for bad options.
int run_dev_cluster(const DevClusterOptions& options);

}  // namespace amlnode::agent
