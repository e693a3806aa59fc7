#include "controlplane/cluster.h"

#include <algorithm>
#include <tuple>

#include "controlplane/tokens.h"

namespace amlnode::controlplane {

using spec::RunStatus;

namespace {

constexpr std::size_t kMaxComputeName = 64;

std::string run_id_for(const std::string& experiment, Millis now) {
  // Azure ML v1's shape: <experiment>_<unix seconds>_<8 hex>.
  return experiment + "_" + std::to_string(now / 1000) + "_" + random_token("", 4);
}

// The total of a run's dropped log bytes; saturates rather than wrapping (each count is at most
// INT64_MAX as parsed, and a node may report many).
std::uint64_t dropped_log_bytes(const nlohmann::json& dropped_logs) {
  std::uint64_t total = 0;
  for (const auto& [stream, dropped] : dropped_logs.items()) {
    if (!dropped.is_object()) continue;
    auto bytes = dropped.find("bytes");
    if (bytes == dropped.end() || !bytes->is_number_integer()) continue;
    if (!bytes->is_number_unsigned() && bytes->get<std::int64_t>() < 0) continue;
    std::uint64_t value = bytes->get<std::uint64_t>();
    total = value > UINT64_MAX - total ? UINT64_MAX : total + value;
  }
  return total;
}

nlohmann::json utc_or_null(Millis t) {
  if (t == 0) return nullptr;
  return format_utc(std::chrono::system_clock::time_point(std::chrono::milliseconds(t)));
}

}  // namespace

Cluster::Cluster(StoreContents contents, std::shared_ptr<Clock> clock, ClusterPolicy policy,
                 std::string user_token)
    : clock_(std::move(clock)), policy_(policy), user_token_(std::move(user_token)) {
  // Every node gets a full heartbeat timeout from the start of this process: the time it was
  // last heard from is not stored, and a restart must not declare the whole cluster lost.
  auto now = clock_->now();
  for (auto& node : contents.nodes) {
    std::string id = node.node_id;
    node_by_token_hash_[node.token_hash] = id;
    nodes_[id] = NodeState{std::move(node), now, {}};
    nodes_[id].last_busy = now;
  }
  for (auto& token : contents.registration_tokens) {
    registration_tokens_[token.token_hash] = std::move(token);
  }
  for (auto& compute : contents.computes) computes_[compute.name] = std::move(compute);
  for (auto& run : contents.runs) {
    next_queue_seq_ = std::max(next_queue_seq_, run.queue_seq);
    RunState state{std::move(run), {}, {}};
    if (auto text = contents.live_job_texts.find(state.record.run_id);
        text != contents.live_job_texts.end()) {
      state.job_text = std::move(text->second);
    }
    runs_[state.record.run_id] = std::move(state);
  }
  for (const auto& lease : contents.leases) {
    if (auto run = runs_.find(lease.run_id); run != runs_.end()) {
      run->second.past_holders.insert(lease.node_id);
    }
  }
  for (auto& [id, run] : runs_) {
    RunRecord& r = run.record;
    for (const auto& holder : r.share_past_holders) run.past_holders.insert(holder);
    if (spec::is_terminal(r.status)) continue;
    // A gang whose shares had not all been handed out (pending shares are not stored) goes back
    // to the queue; its epoch stays spent, so a share that was handed out is told to stop.
    if (r.node_count > 1 && r.status == RunStatus::Queued && !r.node_id.empty()) {
      r.node_id.clear();
      r.share_nodes.clear();
      r.share_statuses.clear();
      save(r);
    }
    if (!r.node_id.empty()) {
      auto holding = holders(r);
      for (std::size_t rank = 0; rank < holding.size(); ++rank) {
        auto node = nodes_.find(holding[rank]);
        if (node == nodes_.end()) continue;
        node->second.held_runs.insert(id);
        // A share that never reported may never have reached its node (which shares were handed
        // out is not stored): it is handed out again; a node that has it ignores the repeat.
        if (r.node_count > 1 && r.share_statuses[rank] == RunStatus::Queued)
          node->second.pending_shares.insert(id);
      }
    } else if (r.status == RunStatus::Queued) {
      queues_[r.compute_name][r.queue_seq] = id;
    }
  }
  load_parallel(contents);
}

Millis Cluster::now_millis() const {
  return unix_millis(clock_->now());
}

void Cluster::save(const NodeRecord& node) {
  changes_.push_back([node](Store& store) { return store.put_node(node); });
}

void Cluster::save(const RunRecord& run) {
  changes_.push_back([run](Store& store) { return store.put_run(run); });
}

std::vector<StoreOp> Cluster::take_changes() {
  std::vector<StoreOp> out;
  out.swap(changes_);
  return out;
}

Caller Cluster::identify(std::string_view bearer) const {
  if (bearer.empty()) return {};
  if (constant_time_equal(bearer, user_token_)) return {CallerKind::User, "", ""};
  std::string hash = token_hash(bearer);
  if (auto node = node_by_token_hash_.find(hash); node != node_by_token_hash_.end()) {
    return {CallerKind::Node, node->second, ""};
  }
  if (auto token = registration_tokens_.find(hash); token != registration_tokens_.end()) {
    return {CallerKind::Registration, "", hash};
  }
  return {};
}

bool Cluster::registration_token_spent(const std::string& token_hash) const {
  auto token = registration_tokens_.find(token_hash);
  return token != registration_tokens_.end() && !token_usable(token->second);
}

bool Cluster::token_usable(const RegistrationTokenRecord& token) const {
  return !token.revoked && (token.expires_at == 0 || now_millis() < token.expires_at) &&
         static_cast<std::int64_t>(token.nodes.size()) < token.max_uses &&
         (token.max_uses > 1 || token.spent_at == 0);
}

Result<std::string> Cluster::registration_token_node(const std::string& token) const {
  auto found = registration_tokens_.find(token_hash(token));
  if (found == registration_tokens_.end())
    return Error{kNotFound, "no such registration token here"};
  return found->second.spent_by;
}

Cluster::MadeToken Cluster::create_registration_token(const TokenRequest& request) {
  std::string token = random_token("amlreg_");
  RegistrationTokenRecord record{token_hash(token), request.compute_name, now_millis(), 0, "", ""};
  record.max_uses = request.max_uses;
  if (request.ttl)
    record.expires_at = record.created_at +
                        std::chrono::duration_cast<std::chrono::milliseconds>(*request.ttl).count();
  registration_tokens_[record.token_hash] = record;
  changes_.push_back([record](Store& store) { return store.put_registration_token(record); });
  return {token, record};
}

std::string Cluster::token_id_of(const RegistrationTokenRecord& token) {
  return "tok-" + token.token_hash.substr(0, 16);
}

nlohmann::json Cluster::token_json(const RegistrationTokenRecord& token) {
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& node : token.nodes) nodes.push_back(node.value("node_id", ""));
  if (token.nodes.empty() && !token.spent_by.empty()) nodes.push_back(token.spent_by);
  return {{"token_id", token_id_of(token)},
          {"compute_name", token.compute_name},
          {"created_utc", utc_or_null(token.created_at)},
          {"expires_utc", utc_or_null(token.expires_at)},
          {"max_uses", token.max_uses},
          {"uses", nodes.size()},
          {"revoked", token.revoked},
          {"nodes", nodes}};
}

nlohmann::json Cluster::list_registration_tokens(const std::string& compute_name) const {
  std::vector<const RegistrationTokenRecord*> tokens;
  for (const auto& [hash, token] : registration_tokens_)
    if (compute_name.empty() || token.compute_name == compute_name) tokens.push_back(&token);
  std::sort(tokens.begin(), tokens.end(), [](const auto* a, const auto* b) {
    return std::tie(a->created_at, a->token_hash) < std::tie(b->created_at, b->token_hash);
  });
  nlohmann::json list = nlohmann::json::array();
  for (const auto* token : tokens) {
    nlohmann::json item = token_json(*token);
    item["usable"] = token_usable(*token);
    list.push_back(std::move(item));
  }
  return {{"tokens", list}};
}

Result<RegistrationTokenRecord> Cluster::revoke_registration_token(const std::string& token_id) {
  for (auto& [hash, token] : registration_tokens_) {
    if (token_id_of(token) != token_id) continue;
    token.revoked = true;
    changes_.push_back(
        [record = token](Store& store) { return store.put_registration_token(record); });
    return token;
  }
  return Error{kNotFound, "no registration token " + token_id};
}

void Cluster::ensure_registration_token(const std::string& token) {
  std::string hash = token_hash(token);
  if (registration_tokens_.count(hash)) return;
  RegistrationTokenRecord record{hash, "", now_millis(), 0, "", ""};
  registration_tokens_[hash] = record;
  changes_.push_back([record](Store& store) { return store.put_registration_token(record); });
}

Result<RegisteredNode> Cluster::register_node(const std::string& registration_token_hash,
                                              NodeRegistration registration) {
  auto token = registration_tokens_.find(registration_token_hash);
  if (token == registration_tokens_.end() || token->second.revoked) {
    return Error{kUnauthorized, "the registration token is unknown or already spent"};
  }
  // A node that registered with this token before (the same key) is that node again.
  if (auto again = registered_again(token->second, registration); again.ok()) return again;
  if (!token_usable(token->second)) return registered_again(token->second, registration);
  std::string compute_name = token->second.compute_name;
  if (auto label = registration.labels.find("compute_name");
      label != registration.labels.end() && label->is_string()) {
    auto labelled = label->get<std::string>();
    if (!compute_name.empty() && labelled != compute_name) {
      return Error{kInvalidRequest,
                   "labels.compute_name: the registration token is for compute \"" + compute_name +
                       "\", not \"" + labelled + "\""};
    }
    compute_name = labelled;
  }
  if (!is_valid_name(compute_name, kMaxComputeName)) {
    return Error{kInvalidRequest,
                 "labels.compute_name: expected 1-64 letters, digits, '_' or '-' (or a token "
                 "made for a compute), got \"" +
                     compute_name + "\""};
  }
  registration.labels["compute_name"] = compute_name;

  RegisteredNode registered;
  registered.node_id = random_token("node-", 8);
  registered.node_token =
      registration.registration_key.empty()
          ? random_token("amlnode_")
          : node_token_for_key(registered.node_id, registration.registration_key);
  NodeRecord node;
  node.node_id = registered.node_id;
  node.token_hash = token_hash(registered.node_token);
  node.compute_name = compute_name;
  node.hostname = std::move(registration.hostname);
  node.ips = std::move(registration.ips);
  node.ssh_port = registration.ssh_port;
  node.cpus = registration.cpus;
  node.memory_bytes = registration.memory_bytes;
  node.gpus = registration.gpus;
  node.labels = std::move(registration.labels);
  node.agent_version = std::move(registration.agent_version);
  node.registered_at = now_millis();

  std::string key_hash =
      registration.registration_key.empty() ? "" : token_hash(registration.registration_key);
  if (token->second.spent_at == 0) {
    token->second.spent_at = node.registered_at;
    token->second.spent_by = node.node_id;
    token->second.key_hash = key_hash;
  }
  token->second.nodes.push_back({{"node_id", node.node_id}, {"key_hash", key_hash}});
  changes_.push_back(
      [record = token->second](Store& store) { return store.put_registration_token(record); });
  save(node);
  node_by_token_hash_[node.token_hash] = registered.node_id;
  nodes_[registered.node_id] = NodeState{std::move(node), clock_->now(), {}};
  nodes_[registered.node_id].last_busy = clock_->now();
  return registered;
}

// Only the key that spent the token brings its node back; the comparison is of hashes, so its
// time says nothing about the key.
Result<RegisteredNode> Cluster::registered_again(const RegistrationTokenRecord& token,
                                                 const NodeRegistration& registration) const {
  Error spent{kUnauthorized, "the registration token is unknown or already spent"};
  if (registration.registration_key.empty()) return spent;
  std::string key = token_hash(registration.registration_key);
  // Every node the token registered (a token stored before join tokens knows its first only).
  nlohmann::json nodes = token.nodes;
  if (nodes.empty() && !token.spent_by.empty())
    nodes.push_back({{"node_id", token.spent_by}, {"key_hash", token.key_hash}});
  for (const auto& node : nodes) {
    std::string id = node.value("node_id", "");
    std::string hash = node.value("key_hash", "");
    if (hash.empty() || !constant_time_equal(hash, key) || !nodes_.count(id)) continue;
    return RegisteredNode{id, node_token_for_key(id, registration.registration_key)};
  }
  return spent;
}

Result<const NodeRecord*> Cluster::node_for(const Caller& caller,
                                            const std::string& node_id) const {
  if (caller.kind == CallerKind::Node && caller.node_id != node_id) {
    return Error{kForbidden, "a node token opens only its own node record"};
  }
  if (caller.kind != CallerKind::Node && caller.kind != CallerKind::User) {
    return Error{kForbidden, "this token does not open node records"};
  }
  auto node = nodes_.find(node_id);
  if (node == nodes_.end()) return Error{kNotFound, "no node " + node_id};
  return &node->second.record;
}

void Cluster::touch(const std::string& node_id) {
  auto node = nodes_.find(node_id);
  if (node == nodes_.end()) return;
  node->second.last_seen = clock_->now();
  if (node->second.record.lost) {
    node->second.record.lost = false;
    save(node->second.record);
  }
}

Cluster::HeartbeatOutcome Cluster::heartbeat(const std::string& node_id,
                                             const HeartbeatReport& report) {
  // A node removed while its heartbeat was on the way is told nothing.
  auto found = nodes_.find(node_id);
  if (found == nodes_.end()) return {};
  touch(node_id);
  NodeState& node = found->second;
  if (node.record.state != report.state || node.record.reason != report.reason) {
    node.record.state = report.state;
    node.record.reason = report.reason;
    save(node.record);
  }
  nlohmann::json commands = nlohmann::json::array();
  for (const auto& id : node.held_runs) {
    if (runs_.at(id).record.status == RunStatus::CancelRequested) {
      commands.push_back(wire::command_json({wire::kCommandCancel, id, ""}));
    }
  }
  for (const auto& reported : report.runs) {
    auto run = runs_.find(reported.run_id);
    if (run == runs_.end()) {
      commands.push_back(wire::command_json({wire::kCommandStop, reported.run_id, "unknown run"}));
      continue;
    }
    const RunRecord& r = run->second.record;
    if (!holds(r, node_id) || r.epoch != reported.epoch) {
      commands.push_back(
          wire::command_json({wire::kCommandStop, reported.run_id, "lease moved to another node"}));
      continue;
    }
    auto status = spec::run_status_from_string(reported.status);
    if (spec::is_terminal(r.status) && status && !spec::is_terminal(*status)) {
      commands.push_back(
          wire::command_json({wire::kCommandStop, reported.run_id,
                              std::string("the run is already ") + spec::to_string(r.status)}));
    }
  }
  if (node.record.draining) commands.push_back(wire::command_json({wire::kCommandDrain, "", ""}));
  if (node.told_to_leave) commands.push_back(wire::command_json({wire::kCommandLeave, "", ""}));
  if (!node.held_runs.empty() || !report.runs.empty()) node.last_busy = clock_->now();
  auto interval = policy_.heartbeat_interval;
  for (const auto& held : node.held_runs) {
    auto run = runs_.find(held);
    if (run != runs_.end() && run->second.record.node_count > 1 &&
        !spec::is_terminal(run->second.record.status))
      interval = std::min(interval, kShareHeartbeatInterval);
  }
  HeartbeatOutcome outcome{commands, let_go_of_taken_runs(node, report), interval};
  if (report.state == "preempted") outcome.requeued = requeue_let_go(node, report);
  // A node leaving for good (told to by a scale-down, or ephemeral) goes once it holds nothing.
  if (report.deregister && report.runs.empty() && node.held_runs.empty() &&
      node.pending_shares.empty())
    outcome.removed = remove_node(node_id).ok();
  return outcome;
}

// A preempted node lets go of each run once it has stopped it and delivered its logs: a run it
// holds but no longer lists is queued again (a new epoch, a new attempt of its logs), as Azure
// ML restarts a job whose low-priority node was preempted.
bool Cluster::requeue_let_go(NodeState& node, const HeartbeatReport& report) {
  std::vector<std::string> released;
  for (const auto& id : node.held_runs) {
    bool listed = std::any_of(report.runs.begin(), report.runs.end(),
                              [&](const auto& reported) { return reported.run_id == id; });
    if (!listed) released.push_back(id);
  }
  bool requeued = false;
  for (const auto& id : released) {
    RunState& run = runs_.at(id);
    // A cancel asked for before the preemption is done: the run ends as its user wanted.
    if (run.record.status == RunStatus::CancelRequested) {
      finish(run, RunStatus::Canceled);
      save(run.record);
      continue;
    }
    // As a lost node's runs go back: through NotResponding, which may be queued again.
    if (spec::can_transition(run.record.status, RunStatus::NotResponding)) {
      run.record.status = RunStatus::NotResponding;
      run.record.not_responding_since = now_millis();
    }
    requeued = requeue(run) || requeued;
  }
  return requeued;
}

bool Cluster::let_go_of_taken_runs(NodeState& node, const HeartbeatReport& report) {
  bool let_go = false;
  for (auto it = node.taken_runs.begin(); it != node.taken_runs.end();) {
    bool still_held = false;
    for (const auto& reported : report.runs) still_held = still_held || reported.run_id == *it;
    if (still_held) {
      ++it;
      continue;
    }
    if (auto run = runs_.find(*it);
        run != runs_.end() && run->second.taken_from.erase(node.record.node_id)) {
      let_go = true;
    }
    it = node.taken_runs.erase(it);
  }
  return let_go;
}

Result<void> Cluster::drain(const std::string& node_id) {
  auto node = nodes_.find(node_id);
  if (node == nodes_.end()) return Error{kNotFound, "no node " + node_id};
  if (!node->second.record.draining) {
    node->second.record.draining = true;
    save(node->second.record);
  }
  return ok();
}

Result<void> Cluster::remove_node(const std::string& node_id) {
  auto node = nodes_.find(node_id);
  if (node == nodes_.end()) return Error{kNotFound, "no node " + node_id};
  if (!node->second.held_runs.empty())
    return Error{kConflict, "node " + node_id + " holds run " + *node->second.held_runs.begin() +
                                "; drain it and wait for its runs to end first"};
  node_by_token_hash_.erase(node->second.record.token_hash);
  nodes_.erase(node);
  changes_.push_back([node_id](Store& store) { return store.delete_node(node_id); });
  return ok();
}

bool Cluster::has_work_for(const std::string& node_id) const {
  auto node = nodes_.find(node_id);
  if (node == nodes_.end()) return false;
  // Placed while it was not draining: still this node's.
  if (!node->second.pending_shares.empty()) return true;
  if (node->second.record.draining || node->second.told_to_leave ||
      node->second.record.state == "preempted")
    return false;
  auto queue = queues_.find(node->second.record.compute_name);
  if (queue == queues_.end()) return false;
  // As lease() goes through the queue.
  for (const auto& [seq, run_id] : queue->second) {
    const RunState& run = runs_.at(run_id);
    if (!may_lease(run, node_id)) continue;
    if (run.record.node_count == 1) return true;
    if (run.record.node_count > usable_nodes(run.record.compute_name)) continue;
    return !gang_nodes(run, node_id).empty();
  }
  return false;
}

std::vector<LeasedRun> Cluster::lease(const std::string& node_id, int max_runs) {
  std::vector<LeasedRun> leased;
  if (!has_work_for(node_id) || !nodes_.count(node_id)) return leased;
  NodeState& node = nodes_.at(node_id);
  for (const auto& run_id : node.pending_shares) {
    const RunState& run = runs_.at(run_id);
    leased.push_back(share_lease(run, *share_rank(run.record, node_id)));
  }
  node.pending_shares.clear();
  if (!leased.empty()) return leased;
  auto& queue = queues_.at(node.record.compute_name);
  Millis now = now_millis();
  for (auto next = queue.begin();
       next != queue.end() && static_cast<int>(leased.size()) < max_runs;) {
    RunState& run = runs_.at(next->second);
    if (!may_lease(run, node_id)) {
      ++next;
      continue;
    }
    if (run.record.node_count > 1) {
      if (run.record.node_count > usable_nodes(run.record.compute_name)) {
        ++next;
        continue;
      }
      // A gang goes to nodes that hold nothing: not to one that has just taken a run.
      auto nodes = leased.empty() ? gang_nodes(run, node_id) : std::vector<std::string>();
      if (nodes.empty()) break;
      next = queue.erase(next);
      leased.push_back(place_gang(run, nodes));
      break;
    }
    next = queue.erase(next);
    RunRecord& r = run.record;
    r.epoch += 1;
    r.node_id = node_id;
    run.past_holders.insert(node_id);
    node.held_runs.insert(r.run_id);
    node.last_busy = clock_->now();
    save(r);
    LeaseRecord lease{r.run_id, r.epoch, node_id, now};
    changes_.push_back([lease](Store& store) { return store.put_lease(lease); });
    leased.push_back(share_lease(run, 0));
  }
  if (queue.empty()) queues_.erase(node.record.compute_name);
  return leased;
}

bool Cluster::return_lease(const std::string& node_id, const std::vector<LeasedRun>& leased) {
  bool queued = false;
  for (const auto& l : leased) {
    auto run = runs_.find(l.run_id);
    if (run == runs_.end()) continue;
    RunRecord& r = run->second.record;
    // Only a lease nothing has happened on yet goes back; the epoch stays counted, so the
    // undelivered one can never be used. A gang goes back whole; once one of its shares has
    // begun, an undelivered share waits for its node's next lease call instead.
    if (!holds(r, node_id) || r.epoch != l.epoch) continue;
    if (r.node_count > 1 && r.status != RunStatus::Queued && !spec::is_terminal(r.status)) {
      nodes_.at(node_id).pending_shares.insert(r.run_id);
      queued = true;
      continue;
    }
    if (r.status != RunStatus::Queued) continue;
    release_from_node(run->second);
    enqueue(run->second);
    save(r);
    queued = true;
  }
  return queued;
}

Result<RunRecord> Cluster::submit_run(const SubmitRequest& request) {
  if (auto refused = batch_refusal(request); !refused.ok()) return refused.error();
  Millis now = now_millis();
  RunState run;
  RunRecord& r = run.record;
  do {
    r.run_id = run_id_for(request.experiment_name, now);
  } while (runs_.count(r.run_id));
  r.experiment_name = request.experiment_name;
  r.compute_name = request.compute_name;
  r.job_file_name = request.job_file_name;
  r.node_count = request.node_count;
  r.status = RunStatus::NotStarted;
  r.created_at = now;
  run.job_text = request.job_text;
  save(r);
  changes_.push_back([id = r.run_id, text = request.job_text](Store& store) {
    return store.put_job_text(id, text);
  });
  RunRecord copy = r;
  runs_[r.run_id] = std::move(run);
  return copy;
}

void Cluster::enqueue(RunState& run) {
  RunRecord& r = run.record;
  if (r.queue_seq == 0) r.queue_seq = ++next_queue_seq_;
  r.status = RunStatus::Queued;
  r.not_responding_since = 0;
  queues_[r.compute_name][r.queue_seq] = r.run_id;
}

void Cluster::dequeue(const RunRecord& r) {
  auto queue = queues_.find(r.compute_name);
  if (queue == queues_.end()) return;
  queue->second.erase(r.queue_seq);
  if (queue->second.empty()) queues_.erase(queue);
}

void Cluster::release_from_node(RunState& run) {
  RunRecord& r = run.record;
  for (const auto& holder : holders(r)) {
    if (auto node = nodes_.find(holder); node != nodes_.end()) {
      node->second.held_runs.erase(r.run_id);
      node->second.pending_shares.erase(r.run_id);
    }
  }
  r.node_id.clear();
  r.share_nodes.clear();
  r.share_statuses.clear();
}

Result<RunStatus> Cluster::queue_run(const std::string& run_id) {
  auto run = runs_.find(run_id);
  if (run == runs_.end()) return Error{kNotFound, "no run " + run_id};
  RunRecord& r = run->second.record;
  if (r.status != RunStatus::NotStarted) {
    return Error{kConflict, "the run's snapshot was already uploaded; it is " +
                                std::string(spec::to_string(r.status))};
  }
  r.queued_at = now_millis();
  enqueue(run->second);
  save(r);
  return r.status;
}

Result<const RunRecord*> Cluster::run_for_reader(const Caller& caller,
                                                 const std::string& run_id) const {
  auto run = runs_.find(run_id);
  if (caller.kind == CallerKind::User) {
    if (run == runs_.end()) return Error{kNotFound, "no run " + run_id};
    return &run->second.record;
  }
  if (caller.kind == CallerKind::Node) {
    if (run == runs_.end()) return Error{kNotFound, "no run " + run_id};
    if (holds(run->second.record, caller.node_id)) return &run->second.record;
    if (run->second.past_holders.count(caller.node_id)) {
      return Error{kStaleEpoch, "the run's lease moved to another node"};
    }
  }
  return Error{kForbidden, "this token does not open run " + run_id};
}

Result<const RunRecord*> Cluster::run_for_writer(const Caller& caller, const std::string& run_id,
                                                 std::int64_t epoch) const {
  if (caller.kind != CallerKind::Node) {
    return Error{kForbidden, "only the node the run is leased to reports on it"};
  }
  auto run = runs_.find(run_id);
  if (run == runs_.end()) return Error{kNotFound, "no run " + run_id};
  const RunRecord& r = run->second.record;
  if (holds(r, caller.node_id) && r.epoch == epoch) return &r;
  if (run->second.past_holders.count(caller.node_id)) {
    if (r.epoch == epoch) {
      return Error{kStaleEpoch, "this node's lease of run " + run_id + " (epoch " +
                                    std::to_string(epoch) +
                                    ") was taken back: the node was lost and the run queued again"};
    }
    return Error{kStaleEpoch, "epoch " + std::to_string(epoch) + " of run " + run_id +
                                  " is over; the run was leased again (epoch " +
                                  std::to_string(r.epoch) + ")"};
  }
  return Error{kForbidden, "run " + run_id + " is not leased to this node"};
}

Result<const RunRecord*> Cluster::run_for_user(const Caller& caller,
                                               const std::string& run_id) const {
  if (caller.kind != CallerKind::User) return Error{kForbidden, "this needs the user token"};
  auto run = runs_.find(run_id);
  if (run == runs_.end()) return Error{kNotFound, "no run " + run_id};
  return &run->second.record;
}

void Cluster::finish(RunState& run, RunStatus status) {
  RunRecord& r = run.record;
  r.status = status;
  r.ended_at = now_millis();
  r.not_responding_since = 0;
  for (const auto& holder : holders(r)) {
    if (auto node = nodes_.find(holder); node != nodes_.end()) {
      node->second.held_runs.erase(r.run_id);
      node->second.pending_shares.erase(r.run_id);
    }
  }
  // The job text is only needed to lease the run, which can no longer happen; it stays stored.
  run.job_text.clear();
  run.job_text.shrink_to_fit();
  forget_parallel(run);
}

RunStatus Cluster::update_status(const std::string& run_id, const std::string& node_id,
                                 const StatusReport& report) {
  RunState& run = runs_.at(run_id);
  RunRecord& r = run.record;
  if (r.node_count > 1) return update_share_status(run, node_id, report);
  if (!spec::can_transition(r.status, report.status)) return r.status;
  if (report.status == RunStatus::Running && r.started_at == 0) r.started_at = now_millis();
  if (report.exit_code) r.exit_code = report.exit_code;
  if (report.error.is_object()) r.error = report.error;
  for (const auto& [key, value] : report.timings.items()) r.timings[key] = value;
  if (report.dropped_logs.is_object()) r.dropped_logs = report.dropped_logs;
  if (spec::is_terminal(report.status)) {
    finish(run, report.status);
  } else {
    r.status = report.status;
    r.not_responding_since = 0;
  }
  save(r);
  return r.status;
}

RunStatus Cluster::cancel(const std::string& run_id) {
  RunState& run = runs_.at(run_id);
  RunRecord& r = run.record;
  if (spec::is_terminal(r.status) || r.status == RunStatus::CancelRequested) return r.status;
  bool held_by_live_node = false;
  for (const auto& holder : holders(r)) {
    if (auto node = nodes_.find(holder); node != nodes_.end())
      held_by_live_node = held_by_live_node || !node->second.record.lost;
  }
  if (held_by_live_node) {
    r.status = RunStatus::CancelRequested;
  } else {
    // Not started anywhere (or its node is gone): nothing has to stop, so it is over now.
    if (r.status == RunStatus::Queued && r.node_id.empty()) dequeue(r);
    finish(run, RunStatus::Canceled);
  }
  save(r);
  return r.status;
}

void Cluster::mark_outputs(const std::string& run_id) {
  RunRecord& r = runs_.at(run_id).record;
  if (r.has_outputs) return;
  r.has_outputs = true;
  save(r);
}

bool Cluster::requeue(RunState& run) {
  if (!spec::can_transition(run.record.status, RunStatus::Queued)) return false;
  for (const auto& holder : holders(run.record)) {
    if (auto node = nodes_.find(holder); node != nodes_.end()) {
      run.taken_from.insert(holder);
      node->second.taken_runs.insert(run.record.run_id);
    }
  }
  release_from_node(run);
  enqueue(run);
  save(run.record);
  return true;
}

SweepOutcome Cluster::sweep() {
  SweepOutcome outcome;
  auto now = clock_->now();
  Millis now_ms = unix_millis(now);
  for (auto& [id, node] : nodes_) {
    if (!node.record.lost && now - node.last_seen > policy_.heartbeat_timeout) {
      node.record.lost = true;
      save(node.record);
      for (const auto& run_id : node.held_runs) {
        RunRecord& r = runs_.at(run_id).record;
        if (!spec::can_transition(r.status, RunStatus::NotResponding)) continue;
        r.status = RunStatus::NotResponding;
        r.not_responding_since = now_ms;
        save(r);
      }
    }
    if (!node.record.lost) continue;
    // Copied: finishing or requeueing a run removes it from held_runs.
    std::vector<std::string> held(node.held_runs.begin(), node.held_runs.end());
    for (const auto& run_id : held) {
      RunState& run = runs_.at(run_id);
      RunRecord& r = run.record;
      if (r.status == RunStatus::CancelRequested) {
        finish(run, RunStatus::Canceled);
        save(r);
        outcome.finished_runs.push_back(run_id);
      } else if (r.status == RunStatus::NotResponding &&
                 now_ms - r.not_responding_since >=
                     std::chrono::duration_cast<std::chrono::milliseconds>(policy_.requeue_delay)
                         .count() &&
                 requeue(run)) {
        outcome.computes_with_queued_runs.insert(r.compute_name);
        outcome.requeued_runs.push_back(run_id);
      }
    }
  }
  tell_idle_nodes_to_leave();
  return outcome;
}

// The node rank of the node's share when the run it shows is a run across nodes; else null.
nlohmann::json Cluster::share_rank_json(const std::string& node_id, const NodeState& node) const {
  if (node.held_runs.empty()) return nullptr;
  auto rank = share_rank(runs_.at(*node.held_runs.begin()).record, node_id);
  return rank ? nlohmann::json(*rank) : nlohmann::json(nullptr);
}

nlohmann::json Cluster::list_nodes() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [id, node] : nodes_) {
    const NodeRecord& n = node.record;
    auto public_ip = n.labels.find("public_ip");
    out.push_back({
        {"nodeId", n.node_id},
        {"privateIpAddress", n.ips.empty() ? nlohmann::json(nullptr) : nlohmann::json(n.ips[0])},
        {"publicIpAddress", public_ip != n.labels.end() && public_ip->is_string()
                                ? *public_ip
                                : nlohmann::json(nullptr)},
        {"port", n.ssh_port},
        {"nodeState", n.lost ? "unusable" : n.state},
        {"reason", n.reason},
        {"runId", node.held_runs.empty() ? nlohmann::json(nullptr)
                                         : nlohmann::json(*node.held_runs.begin())},
        {"nodeRank", share_rank_json(id, node)},
        {"computeName", n.compute_name},
        {"hostname", n.hostname},
        {"lost", n.lost},
        {"draining", n.draining},
    });
  }
  return out;
}

std::vector<std::string> Cluster::held_runs(const std::string& node_id) const {
  auto node = nodes_.find(node_id);
  if (node == nodes_.end()) return {};
  return {node->second.held_runs.begin(), node->second.held_runs.end()};
}

nlohmann::json Cluster::list_runs(const RunFilter& filter) const {
  std::vector<const RunRecord*> chosen;
  for (const auto& [id, run] : runs_) {
    const RunRecord& r = run.record;
    if (filter.live_only && spec::is_terminal(r.status)) continue;
    if (!filter.compute_name.empty() && r.compute_name != filter.compute_name) continue;
    chosen.push_back(&r);
  }
  auto newest_first = [](const RunRecord* a, const RunRecord* b) {
    return a->created_at != b->created_at ? a->created_at > b->created_at : a->run_id > b->run_id;
  };
  std::size_t shown = std::min(filter.limit, chosen.size());
  std::partial_sort(chosen.begin(), chosen.begin() + shown, chosen.end(), newest_first);
  nlohmann::json out = nlohmann::json::array();
  for (std::size_t i = 0; i < shown; ++i) out.push_back(run_view(*chosen[i]));
  return out;
}

nlohmann::json Cluster::compute_status(const std::string& compute_name) const {
  nlohmann::json counts = nlohmann::json::object();
  for (const auto& state : kNodeStates) counts[state] = 0;
  nlohmann::json vm_size = nullptr, vm_priority = nullptr;
  for (const auto& [id, node] : nodes_) {
    const NodeRecord& n = node.record;
    if (n.compute_name != compute_name) continue;
    std::string state = n.lost ? "unusable" : node.told_to_leave ? "leaving" : n.state;
    counts[state] = counts.value(state, 0) + 1;
    if (vm_size.is_null() && n.labels.contains("vm_size")) vm_size = n.labels["vm_size"];
    if (vm_priority.is_null() && n.labels.contains("vm_priority")) {
      vm_priority = n.labels["vm_priority"];
    }
  }
  ComputeScale scale = scale_of(compute_name);
  const ComputeRecord* record = compute_record(compute_name);
  bool cluster = record && record->kind == kComputeKindAmlCompute;
  int all = 0;
  for (const auto& [state, count] : counts.items()) all += count.get<int>();
  std::size_t queued = 0;
  if (auto queue = queues_.find(compute_name); queue != queues_.end())
    queued = queue->second.size();
  nlohmann::json status = {
      {"name", compute_name},
      {"current_node_count", all},
      {"target_node_count", cluster ? scale.target : all},
      {"node_state_counts", counts},
      {"allocation_state", cluster && scale.target != scale.current ? "Resizing" : "Steady"},
      {"vm_size", vm_size},
      {"vm_priority", vm_priority},
      {"queued_run_count", queued},
      {"provisioning_state", nullptr},
      {"scale_settings", nullptr},
      {"errors", nullptr},
      {"creation_time", nullptr}};
  if (record) {
    status["kind"] = record->kind;
    status["settings"] = record->settings;
    status["provisioning_state"] = "Succeeded";
    status["creation_time"] = utc_or_null(record->created_at);
    auto errors = scale_errors_.find(compute_name);
    status["errors"] = errors == scale_errors_.end() ? nlohmann::json::array() : errors->second;
    if (cluster) {
      const auto& s = record->settings;
      status["vm_size"] = s["vm_size"];
      status["vm_priority"] = s["vm_priority"];
      status["scale_settings"] = {
          {"minimum_node_count", s["min_nodes"]},
          {"maximum_node_count", s["max_nodes"]},
          {"idle_seconds_before_scaledown", s["idle_seconds_before_scaledown"]}};
    }
  }
  return status;
}

nlohmann::json Cluster::run_json(const RunRecord& r) {
  return {{"run_id", r.run_id},
          {"experiment_name", r.experiment_name},
          {"compute_name", r.compute_name},
          {"status", spec::to_string(r.status)},
          {"node_id", r.node_id.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.node_id)},
          {"epoch", r.epoch},
          {"exit_code", r.exit_code ? nlohmann::json(*r.exit_code) : nlohmann::json(nullptr)},
          {"error", r.error},
          {"timings", r.timings},
          {"created_utc", utc_or_null(r.created_at)},
          {"queued_utc", utc_or_null(r.queued_at)},
          {"start_time_utc", utc_or_null(r.started_at)},
          {"end_time_utc", utc_or_null(r.ended_at)},
          {"has_outputs", r.has_outputs},
          {"dropped_log_bytes", dropped_log_bytes(r.dropped_logs)},
          {"dropped_logs", r.dropped_logs}};
}

nlohmann::json Cluster::node_json(const NodeRecord& n) {
  return {{"node_id", n.node_id},
          {"compute_name", n.compute_name},
          {"hostname", n.hostname},
          {"ips", n.ips},
          {"ssh_port", n.ssh_port},
          {"cpus", n.cpus},
          {"memory_bytes", n.memory_bytes},
          {"gpus", n.gpus},
          {"labels", n.labels},
          {"agent_version", n.agent_version},
          {"state", n.state},
          {"reason", n.reason},
          {"lost", n.lost},
          {"draining", n.draining},
          {"registered_utc", utc_or_null(n.registered_at)}};
}

}  // namespace amlnode::controlplane
