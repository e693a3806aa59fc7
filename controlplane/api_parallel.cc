// POST /v1/runs/{id}/parallel/open, POST .../parallel/exchange, GET .../parallel/output
// (docs/protocol.md, "Mini-batches"): a ParallelRunStep's mini-batches across nodes, authorized by
// the run epoch's launch token as daemon launches are. The rows of a counted try are stored as
// <data>/runs/<id>/parallel/<mini-batch>.<ticket>.txt before the outcome is committed, so a
// committed outcome always has its rows; rows of a try that did not count are never written.

#include <spdlog/spdlog.h>

#include <fstream>

#include "controlplane/api.h"
#include "controlplane/api_responses.h"
#include "controlplane/parallel_bodies.h"

namespace amlnode::controlplane {

namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kMaxOutputRead = 4 << 20;  // one output answer; the reader goes on from next

// Named by the book too (its creation time): a book made again after its store could not be read
// back numbers its tickets from 1 again, and must never meet an older book's file.
fs::path rows_file(const fs::path& run_dir, const ParallelBook& book, int mini_batch,
                   std::uint64_t ticket) {
  return run_dir / "parallel" /
         (std::to_string(book.created_at()) + "." + std::to_string(mini_batch) + "." +
          std::to_string(ticket) + ".txt");
}

}  // namespace

struct Api::ParallelWaiter {
  std::string run_id;
  std::string bearer;  // the launch token, checked again when woken (the epoch may have moved)
  ParallelExchange exchange;  // without outcomes: those were applied before it waited
  Responder respond;
  asio::steady_timer timer;
  bool answered = false;
};

Routing Api::route_parallel(const RequestHead& head, const std::string& run_id,
                            const std::vector<std::string>& path,
                            const std::map<std::string, std::string>& query) {
  std::string bearer(bearer_token(head.authorization));
  if (auto run = ctx_.cluster.run_for_launcher(bearer, run_id); !run)
    return error_response(run.error());
  if (path.size() != 5) return error_response(404, kNotFound, "no such endpoint");
  const std::string& action = path[4];
  RoutePlan plan{BodyKind::Buffer, ctx_.limits.max_parallel_body, {}, {}};
  if (action == "open") {
    if (head.method != "POST") return method_not_allowed("POST");
    plan.handler = [this, bearer, run_id](Request request, Responder respond) {
      auto open = parse_parallel_open(request.body);
      if (!open) return respond(error_response(open.error()));
      if (auto run = ctx_.cluster.run_for_launcher(bearer, run_id); !run)
        return respond(error_response(run.error()));
      auto answer = ctx_.cluster.open_parallel(run_id, open->node_rank, std::move(open->plan));
      if (!answer) return respond(error_response(answer.error()));
      respond_after_commit(
          respond, [answer = *answer] { return json_response(200, parallel_answer_json(answer)); });
    };
    return plan;
  }
  if (action == "exchange") {
    if (head.method != "POST") return method_not_allowed("POST");
    plan.handler = [this, bearer, run_id](Request request, Responder respond) {
      exchange_parallel(bearer, run_id, request, std::move(respond));
    };
    return plan;
  }
  if (action == "output") {
    if (head.method != "GET") return method_not_allowed("GET");
    std::int64_t from = 0;
    if (auto it = query.find("from"); it != query.end()) {
      try {
        std::size_t used = 0;
        from = std::stoll(it->second, &used);
        if (used != it->second.size() || from < 0) throw std::invalid_argument("from");
      } catch (const std::exception&) {
        return error_response(400, kInvalidRequest,
                              "from: expected a mini-batch index, got \"" + it->second + "\"");
      }
    }
    return json_plan([this, run_id, from](Request, Responder respond) {
      respond(parallel_output(run_id, static_cast<int>(std::min<std::int64_t>(from, INT32_MAX))));
    });
  }
  return error_response(404, kNotFound, "no such endpoint");
}

void Api::exchange_parallel(const std::string& bearer, const std::string& run_id,
                            const Request& request, Responder respond) {
  auto body = parse_parallel_exchange(request.body,
                                      static_cast<double>(ctx_.limits.max_lease_wait.count()));
  if (!body) return respond(error_response(body.error()));
  if (auto run = ctx_.cluster.run_for_launcher(bearer, run_id); !run)
    return respond(error_response(run.error()));
  // A newer exchange of the same node rank supersedes its long poll (the node gave up on it): that
  // one must not hand out, or take back, anything on the old exchange's word.
  drop_parallel_waiters(run_id, body->exchange.node_rank);
  if (auto stored = store_parallel_rows(run_id, body->exchange, body->rows); !stored)
    return respond(error_response(stored.error()));
  auto answer = ctx_.cluster.exchange_parallel(run_id, body->exchange);
  if (!answer) return respond(error_response(answer.error()));
  // Outcomes, releases and the verdict may let another node's long poll go on.
  wake_parallel_waiters(run_id);
  // A node that left waits for the verdict alone.
  auto book = ctx_.cluster.parallel_book(run_id);
  bool left = book && (*book)->left(body->exchange.node_rank);
  bool may_wait = answer->assignments.empty() && body->wait_seconds > 0 &&
                  (body->exchange.want > 0 || left) &&
                  answer->verdict == parallel::RunVerdict::Running;
  if (!may_wait) {
    return respond_after_commit(
        respond, [answer = *answer] { return json_response(200, parallel_answer_json(answer)); });
  }
  ParallelExchange again = std::move(body->exchange);
  again.outcomes.clear();
  again.leaving.clear();
  auto waiter = std::make_shared<ParallelWaiter>(ParallelWaiter{
      run_id, bearer, std::move(again), std::move(respond), asio::steady_timer(ctx_.io)});
  double wait_seconds = body->wait_seconds;
  // What this exchange changed is committed before the node hears anything more.
  commit_then([this, waiter, wait_seconds](Result<void> stored) {
    if (!stored) return waiter->respond(error_response(stored.error()));
    wait_for_parallel(waiter, wait_seconds);
  });
}

Result<void> Api::store_parallel_rows(const std::string& run_id, const ParallelExchange& exchange,
                                      const std::vector<std::string_view>& rows) {
  auto book = ctx_.cluster.parallel_book(run_id);
  if (!book) return ok();  // the exchange itself says why it cannot be applied
  std::uint64_t total = (*book)->rows_bytes();
  std::error_code ec;
  fs::create_directories(run_dir(run_id) / "parallel", ec);
  for (std::size_t i = 0; i < exchange.outcomes.size(); ++i) {
    const auto& outcome = exchange.outcomes[i];
    if (!outcome.ok ||
        !ctx_.cluster.parallel_counts(run_id, exchange.node_rank, outcome.assignment))
      continue;
    total += rows[i].size();
    if (total > ctx_.limits.max_parallel_output_bytes) {
      ctx_.cluster.fail_parallel(run_id,
                                 "the append_row output passed the control plane's limit of " +
                                     std::to_string(ctx_.limits.max_parallel_output_bytes) +
                                     " bytes for a run (--max-parallel-output-bytes)");
      return ok();
    }
    // Written even when empty: the output reads exactly what counted, never an older file.
    auto file = rows_file(run_dir(run_id), **book, outcome.assignment.mini_batch,
                          outcome.assignment.ticket);
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(rows[i].data(), static_cast<std::streamsize>(rows[i].size()));
    out.close();
    if (!out) return Error{errors::kStorageError, "writing " + file.string() + " failed"};
  }
  return ok();
}

void Api::wait_for_parallel(std::shared_ptr<ParallelWaiter> waiter, double wait_seconds) {
  if (try_answer(*waiter)) return;
  parallel_waiters_[waiter->run_id].push_back(waiter);
  waiter->timer.expires_after(to_millis(wait_seconds));
  waiter->timer.async_wait([this, waiter](const boost::system::error_code&) {
    if (waiter->answered) return;
    waiter->answered = true;
    auto& waiters = parallel_waiters_[waiter->run_id];
    waiters.remove(waiter);
    if (waiters.empty()) parallel_waiters_.erase(waiter->run_id);
    if (auto run = ctx_.cluster.run_for_launcher(waiter->bearer, waiter->run_id); !run)
      return waiter->respond(error_response(run.error()));
    auto book = ctx_.cluster.parallel_book(waiter->run_id);
    if (!book) return waiter->respond(error_response(book.error()));
    waiter->respond(json_response(200, parallel_answer_json((*book)->status())));
  });
}

// Answers the waiter when there is a mini-batch for it, the run's verdict is in, or its epoch is
// over. Returns whether it answered.
bool Api::try_answer(ParallelWaiter& waiter) {
  if (auto run = ctx_.cluster.run_for_launcher(waiter.bearer, waiter.run_id); !run) {
    waiter.respond(error_response(run.error()));
    return true;
  }
  auto book = ctx_.cluster.parallel_book(waiter.run_id);
  if (!book) {
    waiter.respond(error_response(book.error()));
    return true;
  }
  bool left = (*book)->left(waiter.exchange.node_rank);
  if ((*book)->verdict() == parallel::RunVerdict::Running && (left || !(*book)->has_work()))
    return false;
  auto answer = ctx_.cluster.exchange_parallel(waiter.run_id, waiter.exchange);
  if (!answer) {
    waiter.respond(error_response(answer.error()));
    return true;
  }
  respond_after_commit(waiter.respond, [answer = *answer] {
    return json_response(200, parallel_answer_json(answer));
  });
  return true;
}

void Api::drop_parallel_waiters(const std::string& run_id, int node_rank) {
  auto found = parallel_waiters_.find(run_id);
  if (found == parallel_waiters_.end()) return;
  auto book = ctx_.cluster.parallel_book(run_id);
  auto& waiters = found->second;
  for (auto it = waiters.begin(); it != waiters.end();) {
    auto waiter = *it;
    if (waiter->exchange.node_rank != node_rank) {
      ++it;
      continue;
    }
    waiter->answered = true;
    waiter->timer.cancel();
    waiter->respond(book ? json_response(200, parallel_answer_json((*book)->status()))
                         : error_response(book.error()));
    it = waiters.erase(it);
  }
  if (waiters.empty()) parallel_waiters_.erase(run_id);
}

void Api::wake_parallel_waiters(const std::string& run_id) {
  wake_run_waiters(parallel_waiters_, run_id);
}

// The counted rows from mini-batch `from` on, in order, up to kMaxOutputRead (at least one
// mini-batch's); X-Amlnode-Next-Mini-Batch says where to go on, the total when all were read.
Response Api::parallel_output(const std::string& run_id, int from) const {
  auto book = ctx_.cluster.parallel_book(run_id);
  if (!book) return error_response(book.error());
  if ((*book)->verdict() != parallel::RunVerdict::Completed)
    return error_response(409, kConflict, "the run's mini-batches have not all completed");
  Response response;
  response.content_type = "application/octet-stream";
  int next = std::max(from, 0);
  int size = (*book)->size();
  for (; next < size && (next == from || response.body.size() < kMaxOutputRead); ++next) {
    auto ticket = (*book)->counted_ticket(next);
    if (!ticket) continue;
    auto file = rows_file(run_dir(run_id), **book, next, *ticket);
    std::ifstream in(file, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // The output is whole or not given: rows that went missing fail the read, naming them.
    if (!in.is_open() || text.size() != (*book)->record(next).rows_bytes) {
      spdlog::error("run {}: the rows of mini-batch {} ({}) are missing or short", run_id, next,
                    file.string());
      return error_response(
          500, errors::kStorageError,
          "the rows of mini-batch " + std::to_string(next) + " are missing on the control plane");
    }
    response.body += text;
  }
  response.headers.emplace_back("X-Amlnode-Next-Mini-Batch", std::to_string(next));
  return response;
}

// The rows of ended runs go (on the file worker: a large run's thousands of files must not hold
// up the io thread).
void Api::forget_parallel_rows() {
  for (const auto& run_id : ctx_.cluster.take_ended_parallel_runs()) {
    auto dir = run_dir(run_id) / "parallel";
    ctx_.file_worker.submit({[dir]() -> Result<void> {
                              std::error_code ec;
                              fs::remove_all(dir, ec);
                              return ok();
                            }},
                            [](Result<void>) {});
  }
}

}  // namespace amlnode::controlplane
