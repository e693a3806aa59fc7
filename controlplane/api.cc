#include "controlplane/api.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "common/error_codes.h"
#include "common/format.h"
#include "common/fs.h"
#include "controlplane/api_responses.h"
#include "controlplane/compute_bodies.h"
#include "controlplane/json_fields.h"
#include "controlplane/log_attempts.h"
#include "controlplane/request_bodies.h"
#include "controlplane/run_metrics.h"
#include "controlplane/scale_hook.h"
#include "controlplane/tokens.h"

namespace amlnode::controlplane {

namespace asio = boost::asio;
using spec::RunStatus;

// ---- answers (api_responses.h) ----

Response json_response(int status, const nlohmann::json& body) {
  Response response;
  response.status = status;
  response.body = dump_json(body);
  return response;
}

int http_status_for(const std::string& code) {
  if (code == kUnauthorized) return 401;
  if (code == kForbidden) return 403;
  if (code == kNotFound) return 404;
  if (code == kInvalidRequest || code == errors::kInvalidStreamName) return 400;
  if (code == kLogBudgetExceeded) return 413;
  if (code == kStaleEpoch || code == kConflict) return 409;
  if (code == errors::kStoreError || code == errors::kStorageError) return 503;
  return 500;
}

Response error_response(int status, const std::string& code, const std::string& message) {
  nlohmann::json body = {{"error", {{"code", code}, {"message", message}}}};
  // A stale epoch tells the node to stop the run and drop its local state for it.
  if (code == kStaleEpoch) body["stop"] = true;
  Response response = json_response(status, body);
  if (status == 401) response.headers.emplace_back("WWW-Authenticate", "Bearer");
  return response;
}

Response error_response(const Error& error) {
  // The server's own storage failing says nothing a client can act on, and its message names the
  // server's files: it goes to the server's log, and the client is told to try again later.
  if (error.code == errors::kStoreError || error.code == errors::kStorageError) {
    spdlog::error("{}", error.message);
    return error_response(503, error.code,
                          "the control plane could not store this; try again later (its log "
                          "says why)");
  }
  return error_response(http_status_for(error.code), error.code, error.message);
}

std::string bearer_token(std::string_view authorization) {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size()) return "";
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i]) return "";
  }
  auto token = authorization.substr(kScheme.size());
  auto first = token.find_first_not_of(' ');
  if (first == std::string_view::npos) return "";
  token.remove_prefix(first);
  return std::string(token.substr(0, token.find_last_not_of(' ') + 1));
}

Response method_not_allowed(const std::string& allowed) {
  Response response = error_response(405, "MethodNotAllowed", "allowed: " + allowed);
  response.headers.emplace_back("Allow", allowed);
  return response;
}

std::chrono::milliseconds to_millis(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
}

namespace {

// ---- request targets ----

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<std::string> percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size() || hex_digit(text[i + 1]) < 0 || hex_digit(text[i + 2]) < 0) {
      return Error{kInvalidRequest, "request target: bad percent-encoding"};
    }
    out.push_back(static_cast<char>(hex_digit(text[i + 1]) * 16 + hex_digit(text[i + 2])));
    i += 2;
  }
  return out;
}

struct Target {
  std::vector<std::string> segments;  // decoded path segments after the leading '/'
  std::map<std::string, std::string> query;
};

Result<Target> parse_target(std::string_view raw) {
  Target target;
  auto question = raw.find('?');
  std::string_view path = raw.substr(0, question);
  if (path.empty() || path[0] != '/') return Error{kInvalidRequest, "request target: not a path"};
  path.remove_prefix(1);
  while (true) {
    auto slash = path.find('/');
    auto segment = percent_decode(path.substr(0, slash));
    if (!segment) return segment.error();
    target.segments.push_back(std::move(*segment));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  if (question == std::string_view::npos) return target;
  std::string_view query = raw.substr(question + 1);
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    auto eq = pair.find('=');
    auto key = percent_decode(pair.substr(0, eq));
    auto value = percent_decode(eq == std::string_view::npos ? "" : pair.substr(eq + 1));
    if (!key || !value) return Error{kInvalidRequest, "request target: bad percent-encoding"};
    target.query[*key] = *value;
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return target;
}

// GET /v1/runs answers at most this many runs.
constexpr std::uint64_t kMaxRunsListed = 1000;

Result<std::uint64_t> unsigned_param(const std::map<std::string, std::string>& query,
                                     const std::string& name, std::uint64_t fallback) {
  auto it = query.find(name);
  if (it == query.end()) return fallback;
  const std::string& text = it->second;
  if (text.empty() || text.size() > 19 ||
      text.find_first_not_of("0123456789") != std::string::npos) {
    return Error{kInvalidRequest,
                 name + ": expected a non-negative integer, got \"" + text.substr(0, 40) + "\""};
  }
  return std::stoull(text);
}

Result<double> seconds_param(const std::map<std::string, std::string>& query,
                             const std::string& name, double max) {
  auto it = query.find(name);
  if (it == query.end()) return 0.0;
  char* end = nullptr;
  double value = std::strtod(it->second.c_str(), &end);
  if (it->second.empty() || *end != '\0' || !(value >= 0)) {
    return Error{kInvalidRequest, name + ": expected a non-negative number of seconds, got \"" +
                                      it->second.substr(0, 40) + "\""};
  }
  return std::min(value, max);
}

Result<std::int64_t> epoch_header(const RequestHead& head) {
  if (!head.epoch) return missing_field("X-Amlnode-Epoch");
  const std::string& text = *head.epoch;
  if (text.empty() || text.size() > 18 ||
      text.find_first_not_of("0123456789") != std::string::npos) {
    return Error{kInvalidRequest, "X-Amlnode-Epoch: expected a non-negative integer, got \"" +
                                      text.substr(0, 40) + "\""};
  }
  return std::stoll(text);
}

// ---- plans ----

Response unauthorized() {
  return error_response(401, kUnauthorized, "a valid bearer token is required");
}

Response forbidden(const std::string& message) {
  return error_response(403, kForbidden, message);
}

// Moves a finished upload into place durably: the data, then the rename, then the directory.
Result<void> install_upload(const std::filesystem::path& temp,
                            const std::filesystem::path& final_path) {
  int fd = ::open(temp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error{errors::kStorageError, errno_message("opening", temp, errno)};
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Error{errors::kStorageError, errno_message("syncing", temp, err)};
  std::error_code ec;
  std::filesystem::create_directories(final_path.parent_path(), ec);
  if (ec)
    return Error{errors::kStorageError,
                 "creating " + final_path.parent_path().string() + ": " + ec.message()};
  if (::rename(temp.c_str(), final_path.c_str()) != 0) {
    return Error{errors::kStorageError, errno_message("renaming into", final_path, errno)};
  }
  int dir = ::open(final_path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return ok();
}

nlohmann::json leased_json(const std::vector<LeasedRun>& leased) {
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& run : leased) runs.push_back(wire::leased_run_json(run));
  return {{"runs", runs}};
}

}  // namespace

// ---- long polls ----

struct Api::LeaseWaiter {
  std::string node_id;
  int max_runs = 1;
  Responder respond;
  std::function<bool()> peer_connected;
  asio::steady_timer timer;
  bool answered = false;
};

struct Api::LogWaiter {
  std::string run_id;
  std::string stream;
  std::uint64_t offset = 0;
  Responder respond;
  asio::steady_timer timer;
  bool answered = false;
};

struct Api::BarrierWaiter {
  Caller caller;
  std::int64_t epoch = 0;
  Responder respond;
  asio::steady_timer timer;
  bool answered = false;
};

struct Api::LaunchWaiter {
  std::string run_id;
  std::string bearer;  // the launch token, checked again when woken (the epoch may have moved)
  int node_rank = -1;  // a take: the share's node rank; -1 for a wait
  int launch_id = 0;   // a wait: the launch whose exit it waits for
  Responder respond;
  asio::steady_timer timer;
  bool answered = false;
};

Api::Api(ApiContext context)
    : ctx_(std::move(context)), budgets_(ctx_.logs, ctx_.limits.log_budgets) {
  // Uploads cut off by a crash are never resumed; their temporary files are garbage.
  std::error_code ec;
  std::filesystem::remove_all(ctx_.data_dir / "tmp", ec);
  std::filesystem::create_directories(ctx_.data_dir / "tmp", ec);
}

Api::~Api() {
  shutdown();
}

void Api::shutdown() {
  for (auto& [compute, waiters] : lease_waiters_) {
    for (auto& waiter : waiters) {
      waiter->answered = true;
      waiter->timer.cancel();
    }
  }
  lease_waiters_.clear();
  for (auto& [run, waiters] : log_waiters_) {
    for (auto& waiter : waiters) {
      waiter->answered = true;
      waiter->timer.cancel();
    }
  }
  log_waiters_.clear();
  for (auto& [run, waiters] : barrier_waiters_) {
    for (auto& waiter : waiters) {
      waiter->answered = true;
      waiter->timer.cancel();
    }
  }
  barrier_waiters_.clear();
  for (auto& [run, waiters] : launch_waiters_) {
    for (auto& waiter : waiters) {
      waiter->answered = true;
      waiter->timer.cancel();
    }
  }
  launch_waiters_.clear();
}

// The node's compute; "" for a node removed meanwhile (its waiters then serve nobody).
std::string Api::compute_of(const std::string& node_id) const {
  auto node = ctx_.cluster.node_for({CallerKind::User, "", ""}, node_id);
  return node ? (*node)->compute_name : std::string();
}

std::filesystem::path Api::run_dir(const std::string& run_id) const {
  return ctx_.data_dir / "runs" / run_id;
}

std::filesystem::path Api::new_upload_path() {
  return ctx_.data_dir / "tmp" / ("upload-" + std::to_string(++next_upload_));
}

void Api::commit_then(std::function<void(Result<void>)> done) {
  forget_parallel_rows();
  auto ops = ctx_.cluster.take_changes();
  if (ops.empty() && ctx_.store_writer.pending() == 0) {
    done(ok());
    return;
  }
  std::vector<Worker::Task> tasks;
  tasks.reserve(ops.size());
  for (auto& op : ops) {
    tasks.push_back([op = std::move(op), store = &ctx_.store] { return op(*store); });
  }
  ctx_.store_writer.submit(std::move(tasks), std::move(done));
}

void Api::respond_after_commit(Responder respond, std::function<Response()> make) {
  commit_then([respond = std::move(respond), make = std::move(make)](Result<void> stored) {
    if (!stored) {
      respond(error_response(503, "StoreUnavailable", stored.error().message));
      return;
    }
    respond(make());
  });
}

void Api::sweep(std::function<void()> done) {
  SweepOutcome outcome = ctx_.cluster.sweep();
  commit_then([this, outcome, done = std::move(done)](Result<void>) {
    for (const auto& compute : outcome.computes_with_queued_runs) serve_lease_waiters(compute);
    for (const auto& run_id : outcome.finished_runs) wake_log_waiters(run_id);
    // A run's share long polls learn at once that their epoch is over.
    for (const auto* runs : {&outcome.finished_runs, &outcome.requeued_runs}) {
      for (const auto& run_id : *runs) {
        wake_barrier_waiters(run_id);
        wake_launch_waiters(run_id);
      }
    }
    run_scale_hooks();
    if (done) done();
  });
}

void Api::run_scale_hooks() {
  if (ctx_.scale_hook.empty()) return;
  auto clusters = ctx_.cluster.clusters();
  // A cluster deleted (and perhaps made again) starts afresh.
  std::erase_if(hooked_, [&](const auto& entry) {
    return std::find(clusters.begin(), clusters.end(), entry.first) == clusters.end();
  });
  for (const auto& name : clusters) {
    if (hooks_in_flight_.count(name)) continue;
    ComputeScale scale = ctx_.cluster.scale_of(name);
    const ComputeRecord* compute = ctx_.cluster.compute_record(name);
    nlohmann::json leaving = nlohmann::json::array();
    nlohmann::json nodes = ctx_.cluster.list_nodes();
    for (const auto& id : scale.leaving) {
      nlohmann::json node = {{"node_id", id}};
      for (const auto& listed : nodes) {
        if (listed["nodeId"] != id) continue;
        node["hostname"] = listed["hostname"];
        node["address"] = listed["privateIpAddress"];
      }
      leaving.push_back(node);
    }
    nlohmann::json request = {{"compute", name},
                              {"vm_size", compute->settings.value("vm_size", "")},
                              {"vm_priority", compute->settings.value("vm_priority", "")},
                              {"min_nodes", compute->settings.value("min_nodes", 0)},
                              {"max_nodes", compute->settings.value("max_nodes", 0)},
                              {"current_node_count", scale.current},
                              {"target_node_count", scale.target},
                              {"nodes_to_remove", leaving}};
    // The decision, and while the cluster is not at its target the nodes there now too: a VM
    // that never joined, or one that went, asks the hook again.
    std::string decision =
        nlohmann::json{{"target", scale.target},
                       {"leaving", scale.leaving},
                       {"current", scale.target == scale.current ? -1 : scale.current}}
            .dump();
    if (hooked_[name] == decision) continue;
    hooked_[name] = decision;
    hooks_in_flight_.insert(name);
    auto outcome = std::make_shared<ScaleHookOutcome>();
    ctx_.hook_worker.submit(
        {[outcome, request, command = ctx_.scale_hook, timeout = ctx_.scale_hook_timeout] {
          *outcome = run_scale_hook(command, request, timeout);
          return ok();
        }},
        [this, name, outcome](Result<void>) {
          hooks_in_flight_.erase(name);
          if (!outcome->ok) {
            spdlog::warn("compute {}: {}", name, outcome->message);
            hooked_.erase(name);  // asked again at a later sweep
          }
          ctx_.cluster.set_scale_errors(
              name, outcome->ok ? nlohmann::json::array()
                                : nlohmann::json::array({{{"code", "ScaleHookFailed"},
                                                          {"message", outcome->message}}}));
        });
  }
}

// ---- routing ----

RoutePlan Api::json_plan(std::function<void(Request, Responder)> handler) const {
  return RoutePlan{BodyKind::Buffer, ctx_.limits.max_json_body, {}, std::move(handler)};
}

Routing Api::route(const RequestHead& head) {
  auto target = parse_target(head.target);
  if (!target) return error_response(target.error());
  const auto& path = target->segments;
  if (path.size() < 2 || path[0] != "v1") return error_response(404, kNotFound, "no such endpoint");
  const std::string& kind = path[1];

  // An unauthenticated health check: the benchmark's baseline and a load balancer's probe.
  if (kind == "health" && path.size() == 2) {
    if (head.method != "GET") return method_not_allowed("GET");
    return json_plan([](Request, Responder respond) {
      respond(json_response(200, {{"status", "ok"}}));
    });
  }

  // Daemon launches are authorized by the run epoch's launch token, which is no caller's.
  if (kind == "runs" && path.size() >= 4 && path[3] == "launches")
    return route_launches(head, path[2], path);
  if (kind == "runs" && path.size() >= 4 && path[3] == "parallel")
    return route_parallel(head, path[2], path, target->query);

  Caller caller = ctx_.cluster.identify(bearer_token(head.authorization));
  // A spent registration token is unknown everywhere but at registration, where the key that
  // spent it may bring its node back.
  bool registering = kind == "nodes" && path.size() == 3 && path[2] == "register";
  if (caller.kind == CallerKind::Registration && !registering &&
      ctx_.cluster.registration_token_spent(caller.token_hash)) {
    caller = Caller{};
  }
  if (caller.kind == CallerKind::Anonymous) {
    bool known =
        kind == "nodes" || kind == "runs" || kind == "computes" || kind == "registration-tokens";
    if (!known) return error_response(404, kNotFound, "no such endpoint");
    return unauthorized();
  }

  if (kind == "nodes") return route_nodes(head, caller, path);
  if (kind == "runs") return route_runs(head, caller, path, target->query);
  if (kind == "computes" && path.size() <= 3)
    return route_computes(head, caller, path, target->query);
  if (kind == "computes" && path.size() == 4 && path[3] == "status") {
    if (head.method != "GET") return method_not_allowed("GET");
    if (caller.kind != CallerKind::User) return forbidden("this needs the user token");
    return json_plan([this, name = path[2]](Request, Responder respond) {
      respond_after_commit(
          respond, [this, name] { return json_response(200, ctx_.cluster.compute_status(name)); });
    });
  }
  // Which node spent a token (amlnode attach waits on it); a user's question only.
  if (kind == "registration-tokens" && path.size() == 3 && path[2] == "lookup") {
    if (head.method != "POST") return method_not_allowed("POST");
    if (caller.kind != CallerKind::User) return forbidden("this needs the user token");
    return json_plan([this](Request request, Responder respond) {
      auto token = parse_registration_token_lookup(request.body);
      if (!token) return respond(error_response(token.error()));
      auto node = ctx_.cluster.registration_token_node(*token);
      if (!node) return respond(error_response(node.error()));
      respond(json_response(
          200, {{"spent", !node->empty()},
                {"node_id", node->empty() ? nlohmann::json() : nlohmann::json(*node)}}));
    });
  }
  if (kind == "registration-tokens" && path.size() == 2) {
    if (caller.kind != CallerKind::User) return forbidden("this needs the user token");
    if (head.method == "GET") {
      auto compute = target->query.find("compute");
      std::string name = compute == target->query.end() ? "" : compute->second;
      return json_plan([this, name](Request, Responder respond) {
        respond_after_commit(respond, [this, name] {
          return json_response(200, ctx_.cluster.list_registration_tokens(name));
        });
      });
    }
    if (head.method != "POST") return method_not_allowed("GET, POST");
    return json_plan([this](Request request, Responder respond) {
      auto asked = parse_registration_token_request(request.body);
      if (!asked) return respond(error_response(asked.error()));
      auto made = ctx_.cluster.create_registration_token(*asked);
      respond_after_commit(respond, [made] {
        nlohmann::json answer = Cluster::token_json(made.record);
        answer["token"] = made.token;
        return json_response(201, answer);
      });
    });
  }
  // A token revoked by its public id (GET lists them).
  if (kind == "registration-tokens" && path.size() == 3 && path[2] != "lookup") {
    if (head.method != "DELETE") return method_not_allowed("DELETE");
    if (caller.kind != CallerKind::User) return forbidden("this needs the user token");
    return json_plan([this, id = path[2]](Request, Responder respond) {
      auto revoked = ctx_.cluster.revoke_registration_token(id);
      if (!revoked) return respond(error_response(revoked.error()));
      respond_after_commit(
          respond, [record = *revoked] { return json_response(200, Cluster::token_json(record)); });
    });
  }
  return error_response(404, kNotFound, "no such endpoint");
}

// /v1/computes (GET: the computes with a record) and /v1/computes/{name} (GET; PUT creates a
// cluster or attaches a Batch pool; PATCH changes a cluster's scale settings; DELETE deletes a
// cluster or, with ?action=detach, detaches a pool). A user's only.
Routing Api::route_computes(const RequestHead& head, const Caller& caller,
                            const std::vector<std::string>& path,
                            const std::map<std::string, std::string>& query) {
  if (caller.kind != CallerKind::User) return forbidden("this needs the user token");
  if (path.size() == 2) {
    if (head.method != "GET") return method_not_allowed("GET");
    return json_plan([this](Request, Responder respond) {
      respond_after_commit(respond,
                           [this] { return json_response(200, ctx_.cluster.list_computes()); });
    });
  }
  const std::string& name = path[2];
  if (head.method == "GET") {
    return json_plan([this, name](Request, Responder respond) {
      respond_after_commit(respond, [this, name] {
        const ComputeRecord* compute = ctx_.cluster.compute_record(name);
        if (!compute) return error_response(404, kNotFound, "compute " + name + " is not attached");
        return json_response(200, Cluster::compute_json(*compute));
      });
    });
  }
  if (head.method == "PUT") {
    return json_plan([this, name](Request request, Responder respond) {
      auto asked = parse_compute_put(request.body, name);
      if (!asked) return respond(error_response(asked.error()));
      auto put = ctx_.cluster.put_compute(*asked);
      if (!put) return respond(error_response(put.error()));
      respond_after_commit(respond, [put = *put] {
        return json_response(put.created ? 201 : 200, Cluster::compute_json(put.record));
      });
    });
  }
  if (head.method == "PATCH") {
    return json_plan([this, name](Request request, Responder respond) {
      auto update = parse_scale_update(request.body);
      if (!update) return respond(error_response(update.error()));
      auto updated = ctx_.cluster.update_compute(name, *update);
      if (!updated) return respond(error_response(updated.error()));
      respond_after_commit(respond, [record = *updated] {
        return json_response(200, Cluster::compute_json(record));
      });
    });
  }
  if (head.method == "DELETE") {
    // ?action=detach for an attached compute, delete (the default) for a cluster.
    auto given = query.find("action");
    std::string action = given == query.end() ? "delete" : given->second;
    if (action != "delete" && action != "detach")
      return error_response(
          400, kInvalidRequest,
          "action: expected delete or detach, got \"" + action.substr(0, 40) + "\"");
    auto how = action == "detach" ? ComputeRemoval::Detach : ComputeRemoval::Delete;
    return json_plan([this, name, how, action](Request, Responder respond) {
      auto removed = ctx_.cluster.remove_compute(name, how);
      if (!removed) return respond(error_response(removed.error()));
      respond_after_commit(respond, [name, action] {
        return json_response(200,
                             {{"name", name}, {action == "detach" ? "detached" : "deleted", true}});
      });
    });
  }
  return method_not_allowed("GET, PUT, PATCH, DELETE");
}

Routing Api::route_nodes(const RequestHead& head, const Caller& caller,
                         const std::vector<std::string>& path) {
  if (path.size() == 3 && path[2] == "register") {
    if (head.method != "POST") return method_not_allowed("POST");
    if (caller.kind != CallerKind::Registration) {
      return forbidden("registration needs a registration token");
    }
    return json_plan([this, caller](Request request, Responder respond) {
      registration(caller, request, std::move(respond));
    });
  }
  if (path.size() == 2) {
    if (head.method != "GET") return method_not_allowed("GET");
    if (caller.kind != CallerKind::User) return forbidden("this needs the user token");
    return json_plan([this](Request, Responder respond) {
      respond_after_commit(respond,
                           [this] { return json_response(200, ctx_.cluster.list_nodes()); });
    });
  }
  if (path.size() < 3 || path.size() > 4) return error_response(404, kNotFound, "no such endpoint");
  const std::string node_id = path[2];
  if (path.size() == 4 && path[3] == "drain") {
    if (head.method != "POST") return method_not_allowed("POST");
    if (caller.kind != CallerKind::User) return forbidden("draining a node needs the user token");
    return json_plan([this, node_id](Request, Responder respond) {
      if (auto drained = ctx_.cluster.drain(node_id); !drained) {
        return respond(error_response(drained.error()));
      }
      respond_after_commit(respond, [node_id] {
        return json_response(200, {{"node_id", node_id}, {"draining", true}});
      });
    });
  }
  if (path.size() == 3 && head.method == "DELETE") {
    if (caller.kind != CallerKind::User) return forbidden("removing a node needs the user token");
    return json_plan([this, node_id](Request, Responder respond) {
      if (auto removed = ctx_.cluster.remove_node(node_id); !removed)
        return respond(error_response(removed.error()));
      respond_after_commit(respond, [node_id] {
        return json_response(200, {{"node_id", node_id}, {"removed", true}});
      });
    });
  }
  auto node = ctx_.cluster.node_for(caller, node_id);
  if (!node) return error_response(node.error());
  if (path.size() == 3) {
    if (head.method != "GET") return method_not_allowed("GET, DELETE");
    return json_plan([this, caller, node_id](Request, Responder respond) {
      respond_after_commit(respond, [this, caller, node_id] {
        auto node = ctx_.cluster.node_for(caller, node_id);
        if (!node) return error_response(node.error());
        return json_response(200, Cluster::node_json(**node));
      });
    });
  }
  // Heartbeats and leases are the node's own business, not a user's.
  if (caller.kind != CallerKind::Node) return forbidden("only the node itself sends this");
  if (path[3] == "heartbeat") {
    if (head.method != "POST") return method_not_allowed("POST");
    return json_plan([this, node_id](Request request, Responder respond) {
      heartbeat(node_id, request, std::move(respond));
    });
  }
  if (path[3] == "lease") {
    if (head.method != "POST") return method_not_allowed("POST");
    return json_plan([this, node_id](Request request, Responder respond) {
      lease(node_id, request, std::move(respond));
    });
  }
  return error_response(404, kNotFound, "no such endpoint");
}

Routing Api::route_runs(const RequestHead& head, const Caller& caller,
                        const std::vector<std::string>& path,
                        const std::map<std::string, std::string>& query) {
  if (path.size() == 2) {
    if (head.method == "GET") return list_runs(caller, query);
    if (head.method != "POST") return method_not_allowed("GET, POST");
    if (caller.kind != CallerKind::User) return forbidden("submitting runs needs the user token");
    return json_plan(
        [this](Request request, Responder respond) { submit(request, std::move(respond)); });
  }
  const std::string run_id = path[2];
  if (path.size() >= 5 && path[3] == "logs") {
    std::string stream = path[4];
    for (std::size_t i = 5; i < path.size(); ++i) stream += "/" + path[i];
    return route_run_logs(head, caller, run_id, stream, query);
  }
  if (path.size() == 3) {
    if (head.method != "GET") return method_not_allowed("GET");
    if (auto run = ctx_.cluster.run_for_reader(caller, run_id); !run)
      return error_response(run.error());
    return json_plan([this, caller, run_id](Request, Responder respond) {
      respond_after_commit(respond, [this, caller, run_id] {
        auto run = ctx_.cluster.run_for_reader(caller, run_id);
        if (!run) return error_response(run.error());
        return json_response(200, ctx_.cluster.run_view(**run));
      });
    });
  }
  if (path.size() != 4) return error_response(404, kNotFound, "no such endpoint");
  const std::string& action = path[3];

  if (action == "snapshot" || action == "outputs") {
    return route_run_file(head, caller, run_id, action);
  }
  if (action == "status") {
    if (head.method != "POST") return method_not_allowed("POST");
    if (caller.kind != CallerKind::Node)
      return forbidden("only the node a run is leased to reports its status");
    if (auto run = ctx_.cluster.run_for_reader(caller, run_id); !run)
      return error_response(run.error());
    return json_plan([this, caller, run_id](Request request, Responder respond) {
      post_status(caller, run_id, request, std::move(respond));
    });
  }
  if (action == "barrier") {
    if (head.method != "POST") return method_not_allowed("POST");
    if (caller.kind != CallerKind::Node)
      return forbidden("only the nodes a run is leased to wait at its barrier");
    if (auto run = ctx_.cluster.run_for_reader(caller, run_id); !run)
      return error_response(run.error());
    return json_plan([this, caller, run_id](Request request, Responder respond) {
      post_barrier(caller, run_id, request, std::move(respond));
    });
  }
  if (action == "cancel") {
    if (head.method != "POST") return method_not_allowed("POST");
    if (auto run = ctx_.cluster.run_for_user(caller, run_id); !run)
      return error_response(run.error());
    return json_plan([this, run_id](Request, Responder respond) {
      RunStatus status = ctx_.cluster.cancel(run_id);
      if (spec::is_terminal(status)) {
        wake_log_waiters(run_id);
        wake_launch_waiters(run_id);
      }
      respond_after_commit(respond, [status] {
        return json_response(200, {{"status", spec::to_string(status)}});
      });
    });
  }
  if (action == "logs") {
    if (head.method != "GET") return method_not_allowed("GET");
    if (auto run = ctx_.cluster.run_for_reader(caller, run_id); !run)
      return error_response(run.error());
    auto attempt = requested_attempt(run_id, query);
    if (!attempt) return error_response(attempt.error());
    return json_plan([this, run_id, attempt = *attempt](Request, Responder respond) {
      int current = archived_attempts(run_dir(run_id)) + 1;
      int shown = attempt == 0 ? current : attempt;
      auto listed = shown == current
                        ? ctx_.logs.list(run_id)
                        : LogStreams(attempts_root(run_dir(run_id))).list(std::to_string(shown));
      nlohmann::json streams = nlohmann::json::object();
      for (const auto& [name, length] : listed) streams[name] = length;
      respond(
          json_response(200, {{"streams", streams}, {"attempt", shown}, {"attempts", current}}));
    });
  }
  if (action == "metrics") {
    if (head.method != "GET") return method_not_allowed("GET");
    if (auto run = ctx_.cluster.run_for_reader(caller, run_id); !run)
      return error_response(run.error());
    return json_plan([this, run_id](Request, Responder respond) {
      respond(json_response(200, run_metrics_json(ctx_.logs, run_id)));
    });
  }
  return error_response(404, kNotFound, "no such endpoint");
}

// GET /v1/runs?live=true&compute=NAME&limit=N: the runs, newest first (docs/protocol.md).
Routing Api::list_runs(const Caller& caller, const std::map<std::string, std::string>& query) {
  if (caller.kind != CallerKind::User) return forbidden("listing runs needs the user token");
  Cluster::RunFilter filter;
  auto limit = unsigned_param(query, "limit", filter.limit);
  if (!limit) return error_response(limit.error());
  if (*limit < 1 || *limit > kMaxRunsListed) {
    return error_response(400, kInvalidRequest,
                          "limit: expected 1 to " + std::to_string(kMaxRunsListed));
  }
  filter.limit = *limit;
  if (auto live = query.find("live"); live != query.end()) {
    if (live->second != "true" && live->second != "false")
      return error_response(400, kInvalidRequest, "live: expected true or false");
    filter.live_only = live->second == "true";
  }
  if (auto compute = query.find("compute"); compute != query.end())
    filter.compute_name = compute->second;
  return json_plan([this, filter](Request, Responder respond) {
    respond_after_commit(respond, [this, filter] {
      return json_response(200, {{"runs", ctx_.cluster.list_runs(filter)}});
    });
  });
}

// Snapshots (PUT by the user, GET by the node holding the run or a user) and outputs (PUT by the
// node holding the run, GET by a user or that node): tar.gz files beside the run's logs.
Routing Api::route_run_file(const RequestHead& head, const Caller& caller,
                            const std::string& run_id, const std::string& action) {
  if (action == "snapshot" && head.method == "PUT") {
    if (auto run = ctx_.cluster.run_for_user(caller, run_id); !run)
      return error_response(run.error());
    return RoutePlan{BodyKind::File, ctx_.limits.max_file_body, new_upload_path(),
                     [this, run_id](Request request, Responder respond) {
                       put_snapshot(run_id, request, std::move(respond));
                     }};
  }
  if (head.method == "GET") {
    Result<const RunRecord*> run = ctx_.cluster.run_for_reader(caller, run_id);
    if (caller.kind == CallerKind::Node && head.epoch) {
      auto epoch = epoch_header(head);
      if (!epoch) return error_response(epoch.error());
      run = ctx_.cluster.run_for_writer(caller, run_id, *epoch);
    }
    if (!run) return error_response(run.error());
    auto file = run_dir(run_id) / (action + ".tar.gz");
    return json_plan([file, action](Request, Responder respond) {
      std::error_code ec;
      if (!std::filesystem::is_regular_file(file, ec)) {
        return respond(error_response(404, kNotFound, "the run has no " + action + " yet"));
      }
      Response response;
      response.content_type = "application/gzip";
      response.file = file;
      respond(std::move(response));
    });
  }
  if (action == "snapshot" || head.method != "PUT") return method_not_allowed("GET, PUT");
  auto epoch = epoch_header(head);
  if (!epoch) return error_response(epoch.error());
  if (auto run = ctx_.cluster.run_for_writer(caller, run_id, *epoch); !run) {
    return error_response(run.error());
  }
  return RoutePlan{BodyKind::File, ctx_.limits.max_file_body, new_upload_path(),
                   [this, caller, run_id, epoch = *epoch](Request request, Responder respond) {
                     put_outputs(caller, run_id, epoch, request, std::move(respond));
                   }};
}

Routing Api::route_run_logs(const RequestHead& head, const Caller& caller,
                            const std::string& run_id, const std::string& stream,
                            const std::map<std::string, std::string>& query) {
  if (!is_valid_stream_name(stream)) {
    return error_response(
        400, "InvalidStreamName",
        "stream: expected user_logs/std_log.txt, user_logs/std_log_process_N.txt, "
        "user_logs/mpi_log.txt, user_logs/mpi_log_node_N.txt, user_logs/stdout.txt, "
        "user_logs/stderr.txt, system_logs/<path> or logs/<path> "
        "with no '..', got \"" +
            stream.substr(0, 80) + "\"");
  }
  auto offset = unsigned_param(query, "offset", 0);
  if (!offset) return error_response(offset.error());
  if (head.method == "PUT") {
    if (!query.count("offset")) return error_response(missing_field("offset"));
    auto epoch = epoch_header(head);
    if (!epoch) return error_response(epoch.error());
    if (auto run = ctx_.cluster.run_for_writer(caller, run_id, *epoch); !run) {
      return error_response(run.error());
    }
    return RoutePlan{BodyKind::Buffer,
                     ctx_.limits.max_log_chunk,
                     {},
                     [this, caller, run_id, stream, offset = *offset, epoch = *epoch](
                         Request request, Responder respond) {
                       put_log(caller, run_id, stream, offset, epoch, request, std::move(respond));
                     }};
  }
  if (head.method != "GET") return method_not_allowed("GET, PUT");
  if (auto run = ctx_.cluster.run_for_reader(caller, run_id); !run)
    return error_response(run.error());
  auto attempt = requested_attempt(run_id, query);
  if (!attempt) return error_response(attempt.error());
  if (*attempt != 0 && *attempt <= archived_attempts(run_dir(run_id))) {
    // An earlier attempt is over: it is read at once, never waited on.
    return json_plan(
        [this, run_id, stream, offset = *offset, attempt = *attempt](Request, Responder respond) {
          respond(archived_log_response(run_id, attempt, stream, offset));
        });
  }
  auto wait =
      seconds_param(query, "wait_seconds", static_cast<double>(ctx_.limits.max_log_wait.count()));
  if (!wait) return error_response(wait.error());
  return RoutePlan{
      BodyKind::Buffer,
      ctx_.limits.max_json_body,
      {},
      [this, run_id, stream, offset = *offset, wait = *wait](Request, Responder respond) {
        get_log(run_id, stream, offset, wait, std::move(respond));
      }};
}

// ---- nodes ----

void Api::registration(const Caller& caller, const Request& request, Responder respond) {
  auto registration = parse_registration(request.body);
  if (!registration) return respond(error_response(registration.error()));
  auto registered = ctx_.cluster.register_node(caller.token_hash, std::move(*registration));
  if (!registered) return respond(error_response(registered.error()));
  auto policy = ctx_.cluster.policy();
  respond_after_commit(respond, [registered = *registered, policy] {
    return json_response(200, {{"node_id", registered.node_id},
                               {"node_token", registered.node_token},
                               {"heartbeat_interval_seconds", policy.heartbeat_interval.count()},
                               {"heartbeat_timeout_seconds", policy.heartbeat_timeout.count()}});
  });
}

void Api::heartbeat(const std::string& node_id, const Request& request, Responder respond) {
  auto report = parse_heartbeat(request.body);
  if (!report) return respond(error_response(report.error()));
  auto outcome = ctx_.cluster.heartbeat(node_id, *report);
  // A run taken from this node while it was cut off may be leased to it again now; a run a
  // preempted node let go of is queued for the others.
  if (outcome.let_go || outcome.requeued) {
    std::string compute = compute_of(node_id);
    commit_then([this, compute](Result<void>) { serve_lease_waiters(compute); });
  }
  auto policy = ctx_.cluster.policy();
  respond_after_commit(respond, [commands = std::move(outcome.commands), policy,
                                 interval = outcome.interval, removed = outcome.removed] {
    nlohmann::json answer = {{"heartbeat_interval_seconds", interval.count()},
                             {"heartbeat_timeout_seconds", policy.heartbeat_timeout.count()},
                             {"commands", commands}};
    // A node that asked to leave for good learns that it may go.
    if (removed) answer["removed"] = true;
    return json_response(200, answer);
  });
}

void Api::lease(const std::string& node_id, const Request& request, Responder respond) {
  auto parsed = parse_lease(request.body, ctx_.limits);
  if (!parsed) return respond(error_response(parsed.error()));
  int runs = parsed->max_runs;
  double wait_seconds = parsed->wait_seconds;

  ctx_.cluster.touch(node_id);
  ctx_.cluster.set_rendezvous_port(node_id, parsed->rendezvous_port);
  if (ctx_.cluster.has_work_for(node_id) || wait_seconds <= 0) {
    return deliver_lease(node_id, runs, std::move(respond));
  }
  auto waiter = std::make_shared<LeaseWaiter>(LeaseWaiter{node_id, runs, std::move(respond),
                                                          request.peer_connected,
                                                          asio::steady_timer(ctx_.io), false});
  std::string compute = compute_of(node_id);
  lease_waiters_[compute].push_back(waiter);
  waiter->timer.expires_after(to_millis(wait_seconds));
  waiter->timer.async_wait([this, waiter, compute](const boost::system::error_code&) {
    if (waiter->answered) return;
    waiter->answered = true;
    auto& waiters = lease_waiters_[compute];
    waiters.remove(waiter);
    if (waiters.empty()) lease_waiters_.erase(compute);
    // The state a lease answer reflects (none queued) needs no commit; changes from touch() do.
    respond_after_commit(waiter->respond, [] {
      return json_response(200, {{"runs", nlohmann::json::array()}});
    });
  });
}

void Api::deliver_lease(const std::string& node_id, int max_runs, Responder respond) {
  auto leased = ctx_.cluster.lease(node_id, max_runs);
  if (auto started = start_new_attempts(leased); !started) {
    // The new node would append over the old attempt's bytes: better no lease than a wrong log.
    ctx_.cluster.return_lease(node_id, leased);
    return respond_after_commit(respond, [error = started.error()] {
      return error_response(503, "StorageUnavailable", error.message);
    });
  }
  commit_then([this, node_id, leased, respond = std::move(respond)](Result<void> stored) {
    auto give_back = [this, node_id, leased] {
      if (!ctx_.cluster.return_lease(node_id, leased)) return;
      std::string compute = compute_of(node_id);
      commit_then([this, compute](Result<void>) { serve_lease_waiters(compute); });
    };
    if (!stored) {
      give_back();
      return respond(error_response(503, "StoreUnavailable", stored.error().message));
    }
    // A gang placed by this lease has shares for other nodes, which may be waiting.
    for (const auto& compute : ctx_.cluster.take_computes_to_serve()) serve_lease_waiters(compute);
    Response response = json_response(200, leased_json(leased));
    if (!leased.empty()) {
      // An answer that never reached the node would leave its runs leased to nobody who knows.
      response.on_sent = [give_back](bool delivered) {
        if (!delivered) give_back();
      };
    }
    respond(std::move(response));
  });
}

void Api::serve_lease_waiters(const std::string& compute_name) {
  auto found = lease_waiters_.find(compute_name);
  if (found == lease_waiters_.end()) return;
  auto& waiters = found->second;
  for (auto it = waiters.begin(); it != waiters.end();) {
    auto waiter = *it;
    if (!waiter->peer_connected || !waiter->peer_connected()) {
      // The client gave up; dropping its responder closes the connection.
      waiter->answered = true;
      waiter->timer.cancel();
      it = waiters.erase(it);
      continue;
    }
    if (!ctx_.cluster.has_work_for(waiter->node_id)) {
      // Nothing for this one (draining, busy for a gang, or the queue is empty): it keeps
      // waiting; a gang's share placed on a node further on is still that node's.
      ++it;
      continue;
    }
    waiter->answered = true;
    waiter->timer.cancel();
    it = waiters.erase(it);
    deliver_lease(waiter->node_id, waiter->max_runs, waiter->respond);
  }
  if (waiters.empty()) lease_waiters_.erase(found);
}

// ---- runs ----

void Api::submit(const Request& request, Responder respond) {
  auto submitted = parse_submit(request.body, ctx_.limits.max_json_body);
  if (!submitted) return respond(error_response(submitted.error()));
  auto run = ctx_.cluster.submit_run(*submitted);
  if (!run) return respond(error_response(run.error()));
  respond_after_commit(respond, [run = *run] {
    return json_response(201, {{"run_id", run.run_id}, {"status", spec::to_string(run.status)}});
  });
}

void Api::put_snapshot(const std::string& run_id, const Request& request, Responder respond) {
  auto refuse = [&](Response response) {
    std::error_code ec;
    std::filesystem::remove(request.body_file, ec);
    respond(std::move(response));
  };
  auto run = ctx_.cluster.run_for_reader({CallerKind::User, "", ""}, run_id);
  if (!run) return refuse(error_response(run.error()));
  if ((*run)->status != RunStatus::NotStarted || snapshot_uploads_.count(run_id)) {
    return refuse(error_response(409, kConflict,
                                 "the run's snapshot was already uploaded; it is " +
                                     std::string(spec::to_string((*run)->status))));
  }
  snapshot_uploads_.insert(run_id);
  auto final_path = run_dir(run_id) / "snapshot.tar.gz";
  ctx_.file_worker.submit(
      {[temp = request.body_file, final_path] { return install_upload(temp, final_path); }},
      [this, run_id, temp = request.body_file, respond = std::move(respond)](Result<void> stored) {
        snapshot_uploads_.erase(run_id);
        if (!stored) {
          std::error_code ec;
          std::filesystem::remove(temp, ec);
          return respond(error_response(stored.error()));
        }
        auto queued = ctx_.cluster.queue_run(run_id);
        if (!queued) return respond(error_response(queued.error()));
        std::string compute =
            (*ctx_.cluster.run_for_reader({CallerKind::User, "", ""}, run_id))->compute_name;
        commit_then([this, compute, status = *queued, respond](Result<void> committed) {
          if (!committed) {
            return respond(error_response(503, "StoreUnavailable", committed.error().message));
          }
          serve_lease_waiters(compute);
          respond(json_response(200, {{"status", spec::to_string(status)}}));
        });
      });
}

void Api::post_status(const Caller& caller, const std::string& run_id, const Request& request,
                      Responder respond) {
  auto update = parse_status(request.body);
  if (!update) return respond(error_response(update.error()));
  if (auto run = ctx_.cluster.run_for_writer(caller, run_id, update->epoch); !run) {
    return respond(error_response(run.error()));
  }
  RunStatus before = ctx_.cluster.run_for_user({CallerKind::User, "", ""}, run_id).value()->status;
  RunStatus now = ctx_.cluster.update_status(run_id, caller.node_id, update->report);
  if (spec::is_terminal(now) && !spec::is_terminal(before)) {
    mark_dropped_logs(run_id, update->report.dropped_logs);
    budgets_.forget(run_id);
  }
  if (spec::is_terminal(now)) {
    wake_log_waiters(run_id);
    wake_barrier_waiters(run_id);
    wake_launch_waiters(run_id);
  }
  respond_after_commit(respond, [now] {
    return json_response(200, {{"status", spec::to_string(now)}});
  });
}

// A share of a run across nodes is prepared: the answer is {"open": true} once every share is
// (waiting up to wait_seconds for that), else {"open": false}. A run that ended or moved to a new
// epoch meanwhile is answered as a status report would be (409 StaleEpoch with "stop").
void Api::post_barrier(const Caller& caller, const std::string& run_id, const Request& request,
                       Responder respond) {
  auto barrier = parse_barrier(request.body, ctx_.limits);
  if (!barrier) return respond(error_response(barrier.error()));
  auto run = ctx_.cluster.run_for_writer(caller, run_id, barrier->epoch);
  if (!run) return respond(error_response(run.error()));
  if (spec::is_terminal((*run)->status)) {
    return respond(error_response(
        409, kStaleEpoch, std::string("the run is already ") + spec::to_string((*run)->status)));
  }
  if (ctx_.cluster.share_prepared(run_id, caller.node_id)) {
    respond(json_response(200, {{"open", true}}));
    return wake_barrier_waiters(run_id);
  }
  if (barrier->wait_seconds <= 0) return respond(json_response(200, {{"open", false}}));
  auto waiter = std::make_shared<BarrierWaiter>(BarrierWaiter{
      caller, barrier->epoch, std::move(respond), asio::steady_timer(ctx_.io), false});
  barrier_waiters_[run_id].push_back(waiter);
  waiter->timer.expires_after(to_millis(barrier->wait_seconds));
  waiter->timer.async_wait([this, waiter, run_id](const boost::system::error_code&) {
    if (waiter->answered) return;
    waiter->answered = true;
    auto& waiters = barrier_waiters_[run_id];
    waiters.remove(waiter);
    if (waiters.empty()) barrier_waiters_.erase(run_id);
    waiter->respond(json_response(200, {{"open", false}}));
  });
}

namespace {

nlohmann::json launch_json(const Cluster::Launch& launch) {
  nlohmann::json out = {{"launch", launch.id},
                        {"node_rank", launch.node_rank},
                        {"state", wire::to_string(launch.state)}};
  out["exit_code"] = launch.exit_code ? nlohmann::json(*launch.exit_code) : nlohmann::json();
  return out;
}

std::optional<int> launch_id_of(const std::string& segment) {
  int id = 0;
  auto [end, error] = std::from_chars(segment.data(), segment.data() + segment.size(), id);
  if (error != std::errc() || end != segment.data() + segment.size() || id < 1) return std::nullopt;
  return id;
}

}  // namespace

// POST /v1/runs/{id}/launches, .../launches/take, .../launches/{n}, .../launches/{n}/wait
// (docs/protocol.md, "Daemon launches").
Routing Api::route_launches(const RequestHead& head, const std::string& run_id,
                            const std::vector<std::string>& path) {
  if (head.method != "POST") return method_not_allowed("POST");
  std::string bearer(bearer_token(head.authorization));
  if (auto run = ctx_.cluster.run_for_launcher(bearer, run_id); !run)
    return error_response(run.error());
  if (path.size() == 4) {
    return json_plan([this, bearer, run_id](Request request, Responder respond) {
      post_launch(bearer, run_id, request, std::move(respond));
    });
  }
  if (path.size() == 5 && path[4] == "take") {
    return json_plan([this, bearer, run_id](Request request, Responder respond) {
      auto take = parse_launch_take(request.body, ctx_.limits);
      if (!take) return respond(error_response(take.error()));
      auto waiter = std::make_shared<LaunchWaiter>(LaunchWaiter{
          run_id, bearer, take->node_rank, 0, std::move(respond), asio::steady_timer(ctx_.io)});
      wait_for_launch(std::move(waiter), take->wait_seconds);
    });
  }
  auto id = path.size() >= 5 ? launch_id_of(path[4]) : std::nullopt;
  if (!id || path.size() > 6 || (path.size() == 6 && path[5] != "wait"))
    return error_response(404, kNotFound, "no such endpoint");
  if (path.size() == 6) {
    return json_plan([this, bearer, run_id, id = *id](Request request, Responder respond) {
      auto wait = parse_launch_wait(request.body, ctx_.limits);
      if (!wait) return respond(error_response(wait.error()));
      auto waiter = std::make_shared<LaunchWaiter>(
          LaunchWaiter{run_id, bearer, -1, id, std::move(respond), asio::steady_timer(ctx_.io)});
      wait_for_launch(std::move(waiter), *wait);
    });
  }
  return json_plan([this, bearer, run_id, id = *id](Request request, Responder respond) {
    auto update = parse_launch_update(request.body);
    if (!update) return respond(error_response(update.error()));
    if (auto run = ctx_.cluster.run_for_launcher(bearer, run_id); !run)
      return respond(error_response(run.error()));
    auto launch = ctx_.cluster.update_launch(run_id, id, update->state, update->exit_code);
    if (!launch) return respond(error_response(launch.error()));
    respond(json_response(200, launch_json(*launch)));
    wake_launch_waiters(run_id);
  });
}

void Api::post_launch(const std::string& bearer, const std::string& run_id, const Request& request,
                      Responder respond) {
  auto asked = parse_launch(request.body);
  if (!asked) return respond(error_response(asked.error()));
  if (auto run = ctx_.cluster.run_for_launcher(bearer, run_id); !run)
    return respond(error_response(run.error()));
  auto launch = ctx_.cluster.add_launch(run_id, asked->host, std::move(asked->command), asked->key);
  if (!launch) return respond(error_response(launch.error()));
  respond(json_response(201, launch_json(*launch)));
  wake_launch_waiters(run_id);
}

void Api::wait_for_launch(std::shared_ptr<LaunchWaiter> waiter, double wait_seconds) {
  if (try_answer(*waiter)) return;
  const std::string run_id = waiter->run_id;
  launch_waiters_[run_id].push_back(waiter);
  waiter->timer.expires_after(to_millis(wait_seconds));
  waiter->timer.async_wait([this, waiter](const boost::system::error_code&) {
    if (waiter->answered) return;
    waiter->answered = true;
    auto& waiters = launch_waiters_[waiter->run_id];
    waiters.remove(waiter);
    if (waiters.empty()) launch_waiters_.erase(waiter->run_id);
    // The epoch may have moved on while it waited: its token answers for its own epoch only.
    if (auto run = ctx_.cluster.run_for_launcher(waiter->bearer, waiter->run_id); !run)
      return waiter->respond(error_response(run.error()));
    if (waiter->node_rank >= 0) return waiter->respond(json_response(200, {{"launch", nullptr}}));
    auto launch = ctx_.cluster.launch(waiter->run_id, waiter->launch_id);
    if (!launch) return waiter->respond(error_response(launch.error()));
    waiter->respond(json_response(200, launch_json(*launch)));
  });
}

// Answers the waiter when it has its answer: a launch to take, the launch it waits for ended, or
// the run moved on (its error). Returns whether it answered.
bool Api::try_answer(LaunchWaiter& waiter) {
  auto run = ctx_.cluster.run_for_launcher(waiter.bearer, waiter.run_id);
  if (!run) {
    waiter.respond(error_response(run.error()));
    return true;
  }
  if (waiter.node_rank >= 0) {
    auto launch = ctx_.cluster.take_launch(waiter.run_id, waiter.node_rank);
    if (!launch) return false;
    waiter.respond(
        json_response(200, {{"launch", {{"id", launch->id}, {"command", launch->command}}}}));
    return true;
  }
  auto launch = ctx_.cluster.launch(waiter.run_id, waiter.launch_id);
  if (launch && launch->state != wire::LaunchState::Exited) return false;
  waiter.respond(launch ? json_response(200, launch_json(*launch))
                        : error_response(launch.error()));
  return true;
}

void Api::wake_launch_waiters(const std::string& run_id) {
  wake_run_waiters(launch_waiters_, run_id);
  wake_parallel_waiters(run_id);
}

void Api::wake_barrier_waiters(const std::string& run_id) {
  auto found = barrier_waiters_.find(run_id);
  if (found == barrier_waiters_.end()) return;
  auto waiters = std::move(found->second);
  barrier_waiters_.erase(found);
  for (auto& waiter : waiters) {
    if (waiter->answered) continue;
    waiter->answered = true;
    waiter->timer.cancel();
    auto run = ctx_.cluster.run_for_writer(waiter->caller, run_id, waiter->epoch);
    if (!run) {
      waiter->respond(error_response(run.error()));
    } else if (spec::is_terminal((*run)->status)) {
      waiter->respond(error_response(
          409, kStaleEpoch, std::string("the run is already ") + spec::to_string((*run)->status)));
    } else {
      waiter->respond(json_response(200, {{"open", true}}));
    }
  }
}

void Api::put_log(const Caller& caller, const std::string& run_id, const std::string& stream,
                  std::uint64_t offset, std::int64_t epoch, const Request& request,
                  Responder respond) {
  // Checked again: the lease may have moved while the chunk was arriving.
  if (auto run = ctx_.cluster.run_for_writer(caller, run_id, epoch); !run) {
    return respond(error_response(run.error()));
  }
  auto taken = within_budget(run_id, stream, caller.node_id, offset, request.body);
  if (!taken) {
    Response refused = error_response(taken.error());
    auto body = nlohmann::json::parse(refused.body);
    body["length"] = ctx_.logs.length(run_id, stream);
    return respond(json_response(refused.status, body));
  }
  std::uint64_t before = ctx_.logs.length(run_id, stream);
  auto appended = ctx_.logs.append(run_id, stream, offset, *taken);
  if (!appended) return respond(error_response(appended.error()));
  if (appended->length > before) budgets_.appended(run_id, appended->length - before);
  if (appended->gap) {
    Response response = json_response(
        409,
        {{"length", appended->length},
         {"error",
          {{"code", "LogGap"},
           {"message", "the chunk starts at " + std::to_string(offset) + " but the stream has " +
                           std::to_string(appended->length) + " bytes; resend from there"}}}});
    return respond(std::move(response));
  }
  wake_log_waiters(run_id);
  respond(json_response(200, {{"length", appended->length}}));
}

Result<std::string_view> Api::within_budget(const std::string& run_id, const std::string& stream,
                                            const std::string& node_id, std::uint64_t offset,
                                            std::string_view bytes) {
  if (!is_valid_stream_name(stream))
    return Error{errors::kInvalidStreamName, "not a log stream name: " + printable(stream)};
  std::uint64_t length = ctx_.logs.length(run_id, stream);
  // A gap, or bytes the stream has already: LogStreams answers those as always.
  if (offset > length || offset + bytes.size() <= length) return bytes;
  auto room = budgets_.room(run_id, length, ctx_.cluster.held_runs(node_id));
  std::uint64_t fresh = offset + bytes.size() - length;
  if (fresh <= room.bytes) return bytes;
  if (room.bytes > 0)
    return bytes.substr(0, static_cast<std::size_t>(length - offset + room.bytes));
  std::string what =
      "the log budget of " + human_bytes(static_cast<double>(room.limit)) + " per " + room.budget;
  if (budgets_.first_refusal(run_id, stream)) {
    auto last = ctx_.logs.read(run_id, stream, length > 0 ? length - 1 : 0, 1);
    bool line_open = last.ok() && !last->empty() && last->back() != '\n';
    std::string marker = std::string(line_open ? "\n" : "") + "[amlnode: this stream reached " +
                         what +
                         "; later bytes are dropped, and the run's record counts them "
                         "(dropped_logs)]\n";
    if (auto marked = ctx_.logs.append(run_id, stream, length, marker); !marked)
      return marked.error();
  }
  return Error{kLogBudgetExceeded, stream + " reached " + what};
}

void Api::mark_dropped_logs(const std::string& run_id, const nlohmann::json& dropped_logs) {
  if (!dropped_logs.is_object()) return;
  auto streams = ctx_.logs.list(run_id);
  for (const auto& [stream, dropped] : dropped_logs.items()) {
    if (!streams.count(stream)) continue;  // never taken (a refused name): nothing to mark
    std::uint64_t bytes = dropped.value("bytes", std::uint64_t{0});
    std::string marker = "[amlnode: in all " + human_bytes(static_cast<double>(bytes)) + " (" +
                         std::to_string(bytes) + " bytes) of this stream's file were not " +
                         "delivered: " + dropped.value("why", std::string("unknown")) + "]\n";
    auto last = ctx_.logs.read(run_id, stream, streams[stream] > 0 ? streams[stream] - 1 : 0, 1);
    if (last.ok() && !last->empty() && last->back() != '\n') marker = "\n" + marker;
    if (auto marked = ctx_.logs.append(run_id, stream, streams[stream], marker); !marked)
      spdlog::error("run {}: marking {}: {}", run_id, stream, marked.error().message);
  }
}

// A run leased again after an earlier epoch may have a previous attempt's streams: they are set
// aside, so the new node's streams start at 0 like its files (log_attempts.h). Followers waiting
// on the old streams are answered, and see the new attempt's number.
Result<void> Api::start_new_attempts(const std::vector<LeasedRun>& leased) {
  for (const auto& run : leased) {
    // A gang's new attempt begins when it is placed, with its master's share; the other shares
    // handed out later must not set aside what the master has shipped meanwhile.
    if (run.epoch <= 1 || run.node_rank != 0) continue;
    auto moved = archive_attempt(run_dir(run.run_id));
    if (!moved) return moved.error();
    budgets_.forget(run.run_id);
    if (*moved) wake_log_waiters(run.run_id, true);
  }
  return ok();
}

// `attempt` query parameter: 0 when absent (the current attempt), else 1 to the current one.
Result<int> Api::requested_attempt(const std::string& run_id,
                                   const std::map<std::string, std::string>& query) const {
  auto attempt = unsigned_param(query, "attempt", 0);
  if (!attempt) return attempt.error();
  if (!query.count("attempt")) return 0;
  int current = archived_attempts(run_dir(run_id)) + 1;
  if (*attempt < 1 || *attempt > static_cast<std::uint64_t>(current)) {
    return Error{kNotFound, "attempt: run " + run_id + " has attempts 1 to " +
                                std::to_string(current) + ", not " + std::to_string(*attempt)};
  }
  return static_cast<int>(*attempt);
}

Response Api::archived_log_response(const std::string& run_id, int attempt,
                                    const std::string& stream, std::uint64_t offset) const {
  LogStreams archived(attempts_root(run_dir(run_id)));
  auto bytes = archived.read(std::to_string(attempt), stream, offset, ctx_.limits.max_log_read);
  if (!bytes) return error_response(bytes.error());
  Response response;
  response.content_type = "application/octet-stream";
  response.body = std::move(*bytes);
  response.headers.emplace_back("X-Amlnode-Length",
                                std::to_string(archived.length(std::to_string(attempt), stream)));
  response.headers.emplace_back("X-Amlnode-Next-Offset",
                                std::to_string(offset + response.body.size()));
  response.headers.emplace_back("X-Amlnode-Attempt", std::to_string(attempt));
  return response;
}

Response Api::log_read_response(const std::string& run_id, const std::string& stream,
                                std::uint64_t offset) const {
  auto bytes = ctx_.logs.read(run_id, stream, offset, ctx_.limits.max_log_read);
  if (!bytes) return error_response(bytes.error());
  auto run = ctx_.cluster.run_for_reader({CallerKind::User, "", ""}, run_id);
  Response response;
  response.content_type = "application/octet-stream";
  response.body = std::move(*bytes);
  response.headers.emplace_back("X-Amlnode-Length",
                                std::to_string(ctx_.logs.length(run_id, stream)));
  response.headers.emplace_back("X-Amlnode-Next-Offset",
                                std::to_string(offset + response.body.size()));
  if (run) response.headers.emplace_back("X-Amlnode-Run-Status", spec::to_string((*run)->status));
  response.headers.emplace_back("X-Amlnode-Attempt",
                                std::to_string(archived_attempts(run_dir(run_id)) + 1));
  return response;
}

void Api::get_log(const std::string& run_id, const std::string& stream, std::uint64_t offset,
                  double wait_seconds, Responder respond) {
  auto run = ctx_.cluster.run_for_reader({CallerKind::User, "", ""}, run_id);
  bool live = run && !spec::is_terminal((*run)->status);
  if (wait_seconds <= 0 || !live || ctx_.logs.length(run_id, stream) > offset) {
    return respond(log_read_response(run_id, stream, offset));
  }
  auto waiter = std::make_shared<LogWaiter>(
      LogWaiter{run_id, stream, offset, std::move(respond), asio::steady_timer(ctx_.io), false});
  log_waiters_[run_id].push_back(waiter);
  waiter->timer.expires_after(to_millis(wait_seconds));
  waiter->timer.async_wait([this, waiter](const boost::system::error_code&) {
    if (waiter->answered) return;
    waiter->answered = true;
    auto& waiters = log_waiters_[waiter->run_id];
    waiters.remove(waiter);
    if (waiters.empty()) log_waiters_.erase(waiter->run_id);
    waiter->respond(log_read_response(waiter->run_id, waiter->stream, waiter->offset));
  });
}

void Api::wake_log_waiters(const std::string& run_id, bool new_attempt) {
  auto found = log_waiters_.find(run_id);
  if (found == log_waiters_.end()) return;
  auto run = ctx_.cluster.run_for_reader({CallerKind::User, "", ""}, run_id);
  bool finished = !run || spec::is_terminal((*run)->status);
  auto& waiters = found->second;
  for (auto it = waiters.begin(); it != waiters.end();) {
    auto waiter = *it;
    if (!finished && !new_attempt && ctx_.logs.length(run_id, waiter->stream) <= waiter->offset) {
      ++it;
      continue;
    }
    waiter->answered = true;
    waiter->timer.cancel();
    it = waiters.erase(it);
    waiter->respond(log_read_response(run_id, waiter->stream, waiter->offset));
  }
  if (waiters.empty()) log_waiters_.erase(found);
}

void Api::put_outputs(const Caller& caller, const std::string& run_id, std::int64_t epoch,
                      const Request& request, Responder respond) {
  if (auto run = ctx_.cluster.run_for_writer(caller, run_id, epoch); !run) {
    std::error_code ec;
    std::filesystem::remove(request.body_file, ec);
    return respond(error_response(run.error()));
  }
  std::error_code ec;
  auto size = std::filesystem::file_size(request.body_file, ec);
  auto final_path = run_dir(run_id) / "outputs.tar.gz";
  ctx_.file_worker.submit(
      {[temp = request.body_file, final_path] { return install_upload(temp, final_path); }},
      [this, run_id, size, temp = request.body_file,
       respond = std::move(respond)](Result<void> stored) {
        if (!stored) {
          std::error_code ec;
          std::filesystem::remove(temp, ec);
          return respond(error_response(stored.error()));
        }
        ctx_.cluster.mark_outputs(run_id);
        respond_after_commit(respond, [size] { return json_response(200, {{"bytes", size}}); });
      });
}

}  // namespace amlnode::controlplane
