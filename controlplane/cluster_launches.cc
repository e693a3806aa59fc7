// Daemon launches of runs across nodes: how Open MPI's mpirun, on a gang's master, starts its
// orted on the other shares' nodes without SSH keys between nodes (docs/distributed.md). The
// master's rsh agent (`amlnode mpi-rsh`) adds a launch for a host; the share on that node (its
// `amlnode mpi-host`) takes it, runs it under its own supervision, and reports how it ended.
// Every call carries the launch token of the run's epoch; nothing can be started on a node that
// holds no share of the run, or under another epoch.

#include <algorithm>
#include <charconv>

#include "common/hash.h"
#include "controlplane/cluster.h"
#include "controlplane/tokens.h"

namespace amlnode::controlplane {

namespace {

constexpr std::string_view kLaunchTokenPrefix = "amllaunch_";

Error not_found(const std::string& what) {
  return Error{kNotFound, what};
}

}  // namespace

std::string Cluster::launch_token(const std::string& run_id, std::int64_t epoch) const {
  // Derived from the user token, which only this server knows: no store, and a restart answers
  // the same token for the same epoch.
  std::string material = "amlnode launch token";
  material.push_back('\0');
  material += user_token_;
  material.push_back('\0');
  material += run_id;
  material.push_back('\0');
  material += std::to_string(epoch);
  return std::string(kLaunchTokenPrefix) + std::to_string(epoch) + "_" + sha256_hex(material);
}

Result<const RunRecord*> Cluster::run_for_launcher(std::string_view bearer,
                                                   const std::string& run_id) const {
  Error unauthorized{kUnauthorized, "this call needs the launch token of the run's epoch"};
  if (!bearer.starts_with(kLaunchTokenPrefix)) return unauthorized;
  std::string_view rest = bearer.substr(kLaunchTokenPrefix.size());
  std::int64_t epoch = 0;
  auto [end, error] = std::from_chars(rest.data(), rest.data() + rest.size(), epoch);
  if (error != std::errc() || end == rest.data() + rest.size() || *end != '_') return unauthorized;
  auto found = runs_.find(run_id);
  if (found == runs_.end() || !constant_time_equal(bearer, launch_token(run_id, epoch)))
    return unauthorized;
  const RunRecord& run = found->second.record;
  if (epoch != run.epoch)
    return Error{kStaleEpoch, "the launch token is of epoch " + std::to_string(epoch) +
                                  "; the run is at epoch " + std::to_string(run.epoch)};
  if (spec::is_terminal(run.status))
    return Error{kStaleEpoch, std::string("the run is already ") + spec::to_string(run.status)};
  if (run.share_nodes.empty()) return Error{kStaleEpoch, "the run is not leased to any node now"};
  return &run;
}

Result<Cluster::Launch> Cluster::add_launch(const std::string& run_id, const std::string& host,
                                            std::string command, const std::string& key) {
  RunState& run = runs_.at(run_id);
  for (const auto& launch : run.launches)
    if (!key.empty() && launch.key == key) return launch;
  const RunRecord& r = run.record;
  std::string addresses;
  std::optional<int> rank;
  for (std::size_t k = 0; k < r.share_nodes.size(); ++k) {
    std::string address = share_address(r.share_nodes[k]);
    addresses += (addresses.empty() ? "" : ", ") + address;
    if (address == host && !rank) rank = static_cast<int>(k);
  }
  if (!rank)
    return Error{kForbidden, "host " + host + " holds no share of run " + run_id +
                                 "; its nodes are " + addresses};
  if (*rank == 0)
    return Error{kForbidden, "host " + host + " is node rank 0 of run " + run_id +
                                 ", where mpirun itself runs; it starts its processes there"};
  int on_node =
      static_cast<int>(std::count_if(run.launches.begin(), run.launches.end(),
                                     [&](const Launch& l) { return l.node_rank == *rank; }));
  if (on_node >= kMaxLaunchesPerNode)
    return Error{kConflict, "node rank " + std::to_string(*rank) + " of run " + run_id +
                                " already had " + std::to_string(on_node) +
                                " launches this epoch, the most one node may have"};
  Launch launch;
  launch.id = static_cast<int>(run.launches.size()) + 1;
  launch.node_rank = *rank;
  launch.command = std::move(command);
  launch.key = key;
  run.launches.push_back(launch);
  return launch;
}

std::optional<Cluster::Launch> Cluster::take_launch(const std::string& run_id, int node_rank) {
  RunState& run = runs_.at(run_id);
  for (auto& launch : run.launches) {
    if (launch.node_rank == node_rank && launch.state != wire::LaunchState::Exited &&
        !launch.acknowledged) {
      launch.state = wire::LaunchState::Running;
      return launch;
    }
  }
  return std::nullopt;
}

Result<Cluster::Launch> Cluster::update_launch(const std::string& run_id, int id,
                                               wire::LaunchState state,
                                               std::optional<int> exit_code) {
  RunState& run = runs_.at(run_id);
  if (id < 1 || id > static_cast<int>(run.launches.size()))
    return not_found("run " + run_id + " has no launch " + std::to_string(id) + " this epoch");
  Launch& launch = run.launches[id - 1];
  // Monotone, as run statuses are: an exited launch stays exited with its first code.
  if (launch.state == wire::LaunchState::Exited) return launch;
  if (state == wire::LaunchState::Exited && !exit_code)
    return Error{kInvalidRequest, "exit_code: an exited launch needs its exit code"};
  launch.state = state;
  launch.acknowledged = true;
  if (state == wire::LaunchState::Exited) launch.exit_code = exit_code;
  return launch;
}

Result<Cluster::Launch> Cluster::launch(const std::string& run_id, int id) const {
  const RunState& run = runs_.at(run_id);
  if (id < 1 || id > static_cast<int>(run.launches.size()))
    return not_found("run " + run_id + " has no launch " + std::to_string(id) + " this epoch");
  return run.launches[id - 1];
}

}  // namespace amlnode::controlplane
