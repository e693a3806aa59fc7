#pragma once

// The control plane's state and rules, with no HTTP and no SQLite in sight: who a token belongs
// to, registration, heartbeats and lost nodes, the FIFO run queues and leases with their epochs,
// run statuses, cancel and drain. It lives on the server's one io thread, so it takes no locks.
// Every change is recorded as StoreOps; the caller takes them with take_changes() and answers its
// request only once the store writer has committed them.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/error_codes.h"
#include "common/result.h"
#include "controlplane/parallel_book.h"
#include "controlplane/records.h"
#include "controlplane/store.h"
#include "spec/wire.h"

namespace amlnode::controlplane {

// Error codes the Cluster returns; the HTTP layer maps each to its status.
inline constexpr const char* kUnauthorized = errors::kUnauthorized;     // 401
inline constexpr const char* kForbidden = "Forbidden";                  // 403
inline constexpr const char* kNotFound = "NotFound";                    // 404
inline constexpr const char* kInvalidRequest = "InvalidRequest";        // 400
inline constexpr const char* kStaleEpoch = errors::kStaleEpoch;         // 409, with "stop": true
inline constexpr const char* kConflict = "Conflict";                    // 409
inline constexpr const char* kLogBudgetExceeded = "LogBudgetExceeded";  // 413

enum class CallerKind { Anonymous, User, Node, Registration };

// Who a bearer token belongs to.
struct Caller {
  CallerKind kind = CallerKind::Anonymous;
  std::string node_id;     // for nodes
  std::string token_hash;  // for registration tokens, spent ones included
};

struct ClusterPolicy {
  std::chrono::seconds heartbeat_interval{5};
  std::chrono::seconds heartbeat_timeout{30};
  // How long a lost node's runs stay NotResponding before they are queued again. With 0 they are
  // requeued by the same sweep that finds the node lost.
  std::chrono::seconds requeue_delay{0};
};

struct NodeRegistration {
  std::string hostname;
  std::vector<std::string> ips;
  int ssh_port = 22;
  int cpus = 0;
  std::int64_t memory_bytes = 0;
  int gpus = 0;
  nlohmann::json labels = nlohmann::json::object();
  std::string agent_version;
  // A secret the node made and stored before registering (32-128 of [A-Za-z0-9_-]); "" when it
  // sent none. The same token and key register again as the same node.
  std::string registration_key;
};

struct RegisteredNode {
  std::string node_id;
  std::string node_token;  // handed out once; only its hash is kept
};

// The bodies a node sends and gets (spec/wire.h), under the names this server's code uses.
using ReportedRun = wire::HeldRun;
using HeartbeatReport = wire::HeartbeatReport;
using LeasedRun = wire::LeasedRun;
using wire::kNodeStates;

struct SubmitRequest {
  std::string job_text;
  std::string job_file_name;
  std::string experiment_name;
  std::string compute_name;
  int node_count = 1;  // more than 1: a run across nodes, leased as a gang
  // The job is an AzureBatchStep's task, as the submitting client read it (its pool_id, "" when
  // it names none). The node that leases it checks the job against its compute again.
  bool batch_task = false;
  std::string batch_pool_id = {};
};

// A compute's record as a user asks for it (PUT /v1/computes/{name}, compute_bodies.h): its kind
// and its settings, checked and with the SDK's defaults applied.
struct ComputeRequest {
  std::string name;
  std::string kind;
  nlohmann::json settings = nlohmann::json::object();
};

// `amlnode compute update` (AmlCompute.update): the scale settings to change.
struct ScaleUpdate {
  std::optional<std::int64_t> min_nodes;
  std::optional<std::int64_t> max_nodes;
  std::optional<std::int64_t> idle_seconds_before_scaledown;
};

// A cluster is deleted, an attached compute detached (the SDK has one for each).
enum class ComputeRemoval { Delete, Detach };

struct StatusReport {
  spec::RunStatus status = spec::RunStatus::Running;
  std::optional<int> exit_code;
  nlohmann::json error;                               // null or an object
  nlohmann::json timings = nlohmann::json::object();  // merged into the run's timings
  // With a terminal status: {stream: {"bytes", "why"}} of what the node did not deliver.
  nlohmann::json dropped_logs = nullptr;
};

// A cluster's size as the control plane sees it (cluster_scaling.cc): its usable nodes, how many
// it wants within min_nodes..max_nodes, and the nodes a scale-down told to leave.
struct ComputeScale {
  int current = 0;  // nodes of the compute that are not lost
  int target = 0;
  int busy = 0;          // nodes holding a run
  int queued_nodes = 0;  // nodes the queued runs need (a gang's node_count each)
  std::vector<std::string> leaving;
};

// What a lost-node sweep changed that others wait on.
struct SweepOutcome {
  std::set<std::string> computes_with_queued_runs;
  std::vector<std::string> finished_runs;
  std::vector<std::string> requeued_runs;
};

class Cluster {
 public:
  Cluster(StoreContents contents, std::shared_ptr<Clock> clock, ClusterPolicy policy,
          std::string user_token);

  const ClusterPolicy& policy() const { return policy_; }

  Caller identify(std::string_view bearer_token) const;
  // A spent registration token opens nothing but a repeated registration with the key that spent
  // it; everywhere else it is as good as unknown.
  bool registration_token_spent(const std::string& token_hash) const;

  // Registration tokens. `compute_name` "" makes a token any compute's node may use. A join
  // token (max_uses above 1, or a time to live) registers up to max_uses nodes, each its own,
  // until it expires or is revoked; one node registering again with its key gets the same node.
  struct TokenRequest {
    std::string compute_name;
    std::int64_t max_uses = 1;
    std::optional<std::chrono::seconds> ttl;
  };
  struct MadeToken {
    std::string token;  // the secret, handed out once
    RegistrationTokenRecord record;
  };
  MadeToken create_registration_token(const TokenRequest& request);
  std::string create_registration_token(const std::string& compute_name) {
    return create_registration_token(TokenRequest{compute_name}).token;
  }
  // The tokens (of one compute when `compute_name` is not empty), without their secrets.
  nlohmann::json list_registration_tokens(const std::string& compute_name) const;
  // No node registers with it any more; the nodes it registered keep their own tokens.
  Result<RegistrationTokenRecord> revoke_registration_token(const std::string& token_id);
  // A token's public name: the start of its hash.
  static std::string token_id_of(const RegistrationTokenRecord& token);
  static nlohmann::json token_json(const RegistrationTokenRecord& token);
  // Whether `token` was made here, and the node that spent it ("" while unspent); NotFound for a
  // token this control plane never made.
  Result<std::string> registration_token_node(const std::string& token) const;
  // Makes `token` a usable registration token unless it exists already (spent or not), so the
  // same --registration-token on every restart is single-use across all of them.
  void ensure_registration_token(const std::string& token);
  // A spent token is refused (401) unless it is presented again with the key that spent it: then
  // the answer is the node it registered, with the same id and token, and nothing changes.
  Result<RegisteredNode> register_node(const std::string& registration_token_hash,
                                       NodeRegistration registration);

  // A node's own record; `caller` must be that node or a user.
  Result<const NodeRecord*> node_for(const Caller& caller, const std::string& node_id) const;
  // Records that a node was heard from; a lost node is back.
  void touch(const std::string& node_id);
  // Applies a heartbeat: the commands for the node (cancel, stop, drain), and whether it let go of
  // a queued run that had been taken from it, which it may now lease (see RunState::taken_from).
  struct HeartbeatOutcome {
    nlohmann::json commands;
    bool let_go = false;
    // When the node should heartbeat next: the policy's interval, or kShareHeartbeatInterval while
    // it holds a share of a live run across nodes, so that a share that failed elsewhere is
    // stopped here within about that much (the stop rides on the heartbeat's answer).
    std::chrono::seconds interval{5};
    // The node said it leaves for good and held nothing: it is removed (remove_node).
    bool removed = false;
    // A preempted node let go of runs, which are queued again.
    bool requeued = false;
  };
  static constexpr std::chrono::seconds kShareHeartbeatInterval{1};
  HeartbeatOutcome heartbeat(const std::string& node_id, const HeartbeatReport& report);
  Result<void> drain(const std::string& node_id);
  // Forgets a node (amlnode detach): its identity no longer opens anything. Refused (409) while
  // it holds a live run; the runs it held before stay, naming it.
  Result<void> remove_node(const std::string& node_id);

  // Leases up to `max_runs` of the node's compute queue, oldest first, each with a new epoch.
  // A run across nodes (node_count > 1) is leased as a gang: to the asking node as node rank 0 and
  // to node_count - 1 other nodes of its compute that hold nothing, all at once or not at all, so
  // that no node holds a share while it waits for the rest. The other shares wait in their nodes'
  // pending_shares for their next lease call (take_computes_to_serve() says whose long polls to
  // answer). A gang that cannot be placed yet holds the runs behind it back (so it is never
  // starved by smaller runs); one that needs more nodes than its compute has usable is passed
  // over, with the reason in run_view().
  std::vector<LeasedRun> lease(const std::string& node_id, int max_runs);
  // The port the node offers a gang's rendezvous should it become its master (in memory; 6105
  // until it says otherwise).
  void set_rendezvous_port(const std::string& node_id, int port);
  // The barrier of a run across nodes: the node's share of the current epoch is prepared. Whether
  // every share now is (prepared, or already past it: a share that runs was prepared before a
  // restart of this server). The caller has checked the epoch with run_for_writer.
  bool share_prepared(const std::string& run_id, const std::string& node_id);
  // Daemon launches of a run across nodes (MPI's rsh agent, cluster_launches.cc). A launch is a
  // command for one share's node, started there by that share (its `amlnode mpi-host`), under the
  // run's epoch: a new epoch forgets the old one's launches, and nothing else can be started.
  struct Launch {
    int id = 0;
    int node_rank = 0;
    std::string command;
    std::string key;  // the caller's name for it, for an add asked again
    wire::LaunchState state = wire::LaunchState::Pending;
    // Whether the share reported it running: until then a take hands it out again, so an answer
    // that never reached the share (a dropped long poll) does not lose it.
    bool acknowledged = false;
    std::optional<int> exit_code;
  };
  // The launch token of the run's epoch (derived, never stored: the same after a restart).
  std::string launch_token(const std::string& run_id, std::int64_t epoch) const;
  // The live run of the current epoch whose launch token `bearer` is: 401 for anything that is no
  // run's launch token, 409 StaleEpoch for an old epoch's or an ended run's.
  Result<const RunRecord*> run_for_launcher(std::string_view bearer,
                                            const std::string& run_id) const;
  // A launch on the share whose node's address is `host`; refused (403) for an address holding no
  // share of the run, for the master's own node (mpirun runs there), and beyond kMaxLaunches.
  Result<Launch> add_launch(const std::string& run_id, const std::string& host, std::string command,
                            const std::string& key = "");
  // The oldest launch for node rank `node_rank` that its share has not reported running, now
  // running; nullopt when none waits.
  std::optional<Launch> take_launch(const std::string& run_id, int node_rank);
  // The share's report of a launch it took: running, or exited with its code.
  Result<Launch> update_launch(const std::string& run_id, int id, wire::LaunchState state,
                               std::optional<int> exit_code);
  Result<Launch> launch(const std::string& run_id, int id) const;
  // At most this many launches per node of a run (Open MPI starts one daemon per node).
  static constexpr int kMaxLaunchesPerNode = 2;
  static constexpr std::size_t kMaxLaunchCommand = 64 * 1024;

  // A ParallelRunStep across nodes (cluster_parallel.cc): its mini-batches, handed out by the
  // control plane to every share of the run. The caller has checked the launch token.
  static constexpr std::size_t kMaxParallelMiniBatches = 1'000'000;
  static constexpr int kMaxParallelWant = 1024;
  // A share's cut of the inputs: the first makes the run's book, every later one (of any epoch)
  // must cut the same mini-batches (409 naming both digests otherwise).
  Result<ParallelAnswer> open_parallel(const std::string& run_id, int node_rank, ParallelPlan plan);
  Result<ParallelAnswer> exchange_parallel(const std::string& run_id,
                                           const ParallelExchange& exchange);
  // Whether node rank `rank`'s successful try would count now (the caller stores its rows only
  // then). The book moves to the run's epoch first.
  bool parallel_counts(const std::string& run_id, int rank, const parallel::Assignment& assignment);
  // The run failed outside the scheduler's rules (its output passed the control plane's limit).
  void fail_parallel(const std::string& run_id, const std::string& why);
  Result<const ParallelBook*> parallel_book(const std::string& run_id) const;
  // Runs whose mini-batches were forgotten since the last call (they ended): their rows can go.
  std::vector<std::string> take_ended_parallel_runs();

  // Whether the node would get runs from lease() now.
  bool has_work_for(const std::string& node_id) const;
  // A lease answer that never reached its node: those runs go back to the queue at their old
  // place. Returns whether any run was queued again.
  bool return_lease(const std::string& node_id, const std::vector<LeasedRun>& runs);

  // A Batch task goes to an attached Batch pool of its pool_id only, and a Batch pool takes Batch
  // tasks only (400 otherwise, naming the compute).
  Result<RunRecord> submit_run(const SubmitRequest& request);

  // Computes with a record (cluster_computes.cc): AmlCompute clusters (`compute create`) and
  // attached Batch pools (`compute attach-batch`). Putting one makes its record, or finds the
  // same one (created false); the name taken with another kind or other settings is 409.
  struct PutCompute {
    ComputeRecord record;
    bool created = false;
  };
  Result<PutCompute> put_compute(const ComputeRequest& request);
  // A cluster's scale settings (404 unknown, 400 for an attached compute or min above max).
  Result<ComputeRecord> update_compute(const std::string& name, const ScaleUpdate& update);
  // Delete: a cluster, refused (409) while nodes are in it. Detach: an attached compute's record
  // only; the pool, its nodes and their registrations are untouched, as detach() leaves the
  // resource in the SDK. Either is refused (409) while the compute has a queued or running run,
  // and for the other kind (400); 404 for a compute without a record.
  Result<void> remove_compute(const std::string& name, ComputeRemoval how);
  const ComputeRecord* compute_record(const std::string& name) const;
  nlohmann::json list_computes() const;
  static nlohmann::json compute_json(const ComputeRecord& compute);
  // The snapshot is stored: the run joins its compute's queue.
  Result<spec::RunStatus> queue_run(const std::string& run_id);

  // The run, for a user or for the node holding it (any epoch of that node's current lease).
  Result<const RunRecord*> run_for_reader(const Caller& caller, const std::string& run_id) const;
  // The run, for the node holding its current epoch: 404 unknown, 409 StaleEpoch for a node that
  // held an older epoch, 403 for any other caller.
  Result<const RunRecord*> run_for_writer(const Caller& caller, const std::string& run_id,
                                          std::int64_t epoch) const;
  // Only for a user; 404 when unknown.
  Result<const RunRecord*> run_for_user(const Caller& caller, const std::string& run_id) const;

  // Idempotent and monotone: a status the run is at or past changes nothing. Returns the run's
  // status afterwards. The caller has checked the epoch with run_for_writer. For a run across
  // nodes the report is `node_id`'s share's, and the run's status combines them: the least
  // advanced share's phase while all are live, Completed once all have completed, and the first
  // share to fail or be canceled ends the run (the others are told to stop at their next
  // heartbeat).
  spec::RunStatus update_status(const std::string& run_id, const std::string& node_id,
                                const StatusReport& report);
  spec::RunStatus cancel(const std::string& run_id);
  void mark_outputs(const std::string& run_id);

  // Marks nodes silent for heartbeat_timeout lost, their runs NotResponding, and requeues runs
  // NotResponding for requeue_delay (with a new epoch at their next lease).
  SweepOutcome sweep();

  // The live runs whose current lease is the node's.
  std::vector<std::string> held_runs(const std::string& node_id) const;
  nlohmann::json list_nodes() const;
  // Runs, newest first: only live ones (not yet terminal) with `live_only`, only one compute's when
  // `compute_name` is not empty; at most `limit` of them.
  struct RunFilter {
    bool live_only = false;
    std::string compute_name;
    std::size_t limit = 100;
  };
  nlohmann::json list_runs(const RunFilter& filter) const;
  // AmlCompute's get_status(): the node counts, the allocation state, the scale settings and the
  // errors of the last scale hook call (set_scale_errors).
  nlohmann::json compute_status(const std::string& compute_name) const;
  // Scaling (cluster_scaling.cc). A cluster's target_node_count counts the nodes holding runs, the
  // nodes the queued runs need and the idle nodes still within idle_seconds_before_scaledown,
  // within min_nodes..max_nodes. The sweep tells idle nodes past it to leave while the count is
  // above that.
  ComputeScale scale_of(const std::string& compute_name) const;
  // The clusters (kind amlcompute) by name.
  std::vector<std::string> clusters() const;
  // What the scale hook said last for the compute: [] after a success, else [{"code",
  // "message"}] (in memory).
  void set_scale_errors(const std::string& compute_name, nlohmann::json errors);
  static nlohmann::json run_json(const RunRecord& run);
  // run_json, and for a run across nodes its shares, and why a queued one is waiting.
  nlohmann::json run_view(const RunRecord& run) const;
  // The computes whose waiting lease calls may now get something (a gang placed shares on other
  // nodes), since the last call.
  std::set<std::string> take_computes_to_serve();
  static nlohmann::json node_json(const NodeRecord& node);

  // The StoreOps for everything changed since the last call.
  std::vector<StoreOp> take_changes();

 private:
  struct NodeState {
    NodeRecord record;
    std::chrono::system_clock::time_point last_seen;
    std::set<std::string> held_runs;   // live runs whose current lease is this node's
    std::set<std::string> taken_runs;  // runs requeued away from it, not yet let go of
    // Shares of runs across nodes placed here by another node's lease call, not yet handed to
    // this node (they are in held_runs too). In memory only: a restarted control plane returns
    // such gangs to the queue.
    std::set<std::string> pending_shares;
    int rendezvous_port = 6105;
    // When it last held a run (or registered, or this server started): its idle time counts from
    // here. In memory only.
    std::chrono::system_clock::time_point last_busy{};
    // A scale-down chose it (cluster_scaling.cc): its heartbeats get the leave command.
    bool told_to_leave = false;
  };
  struct RunState {
    RunRecord record;
    std::string job_text;                // kept only while the run is live
    std::set<std::string> past_holders;  // every node that held an epoch of it
    // The nodes this run was requeued away from (one was lost), while they may still be running
    // the old epoch. The run is not leased back to it until one of its heartbeats no
    // longer lists the run: the node then has stopped it, and a new epoch there cannot meet the
    // old one's process in the same run folder. In memory only: a restarted control plane
    // forgets it, which costs nothing worse than the old behaviour.
    std::set<std::string> taken_from;
    // Node ranks of the current epoch whose share reached the barrier (in memory: a share waiting
    // there asks again after a restart).
    std::set<int> prepared_shares;
    // The current epoch's daemon launches, by id (in memory: a restarted control plane forgets
    // them, and a launch asked about then is 404, which fails that mpirun).
    std::vector<Launch> launches;
    // A ParallelRunStep across nodes: its mini-batches (stored; forgotten when the run ends).
    std::shared_ptr<ParallelBook> parallel;
  };
  bool may_lease(const RunState& run, const std::string& node_id) const {
    return !run.taken_from.count(node_id);
  }
  nlohmann::json share_rank_json(const std::string& node_id, const NodeState& node) const;
  // Runs across nodes (cluster_gangs.cc).
  static bool holds(const RunRecord& run, const std::string& node_id);
  static std::optional<int> share_rank(const RunRecord& run, const std::string& node_id);
  static std::vector<std::string> holders(const RunRecord& run);
  bool usable(const NodeState& node) const;
  int usable_nodes(const std::string& compute_name) const;
  std::vector<std::string> gang_nodes(const RunState& run, const std::string& asker) const;
  LeasedRun place_gang(RunState& run, const std::vector<std::string>& nodes);
  LeasedRun share_lease(const RunState& run, int node_rank) const;
  std::string share_address(const std::string& node_id) const;
  spec::RunStatus update_share_status(RunState& run, const std::string& node_id,
                                      const StatusReport& report);

  Millis now_millis() const;
  Result<void> batch_refusal(const SubmitRequest& request) const;
  void tell_idle_nodes_to_leave();
  bool counts_toward(const NodeState& node, const std::string& compute_name) const;
  Result<RegisteredNode> registered_again(const RegistrationTokenRecord& token,
                                          const NodeRegistration& registration) const;
  bool token_usable(const RegistrationTokenRecord& token) const;
  void save(const NodeRecord& node);
  void save(const RunRecord& run);
  void enqueue(RunState& run);
  void dequeue(const RunRecord& run);
  void finish(RunState& run, spec::RunStatus status);
  void release_from_node(RunState& run);
  // Whether the report let go of any of the node's taken runs.
  bool let_go_of_taken_runs(NodeState& node, const HeartbeatReport& report);
  bool requeue_let_go(NodeState& node, const HeartbeatReport& report);
  bool requeue(RunState& run);
  void save_parallel(const std::string& run_id, ParallelBook& book);
  void forget_parallel(RunState& run);
  void load_parallel(StoreContents& contents);

  std::shared_ptr<Clock> clock_;
  ClusterPolicy policy_;
  std::string user_token_;
  std::map<std::string, NodeState> nodes_;  // ordered by id, for stable listings
  std::unordered_map<std::string, std::string> node_by_token_hash_;
  std::unordered_map<std::string, RegistrationTokenRecord> registration_tokens_;
  std::map<std::string, ComputeRecord> computes_;  // by name
  std::map<std::string, nlohmann::json> scale_errors_;
  std::unordered_map<std::string, RunState> runs_;
  // Per compute name, queued runs by queue_seq: FIFO, and a requeued run keeps its place.
  std::map<std::string, std::map<std::int64_t, std::string>> queues_;
  std::int64_t next_queue_seq_ = 0;
  std::vector<StoreOp> changes_;
  std::set<std::string> computes_to_serve_;
  std::vector<std::string> ended_parallel_runs_;
};

}  // namespace amlnode::controlplane
