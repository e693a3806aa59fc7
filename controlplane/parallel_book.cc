#include "controlplane/parallel_book.h"

#include <algorithm>
#include <unordered_set>

namespace amlnode::controlplane {

using parallel::Assignment;
using parallel::RunVerdict;
using parallel::TryError;

namespace {

nlohmann::json error_json(const std::optional<TryError>& error) {
  if (!error) return nullptr;
  return {{"message", error->message}, {"traceback", error->traceback}};
}

std::optional<TryError> error_from_json(const nlohmann::json& in) {
  if (!in.is_object()) return std::nullopt;
  return TryError{in.value("message", ""), in.value("traceback", "")};
}

}  // namespace

ParallelBook::ParallelBook(ParallelPlan plan, std::int64_t epoch, Millis created_at)
    : plan_(std::move(plan)),
      scheduler_(plan_.items, plan_.rules),
      epoch_(epoch),
      created_at_(created_at),
      holder_rank_(plan_.items.size(), -1),
      holder_epoch_(plan_.items.size(), 0),
      held_by_rank_(static_cast<std::size_t>(std::max(plan_.node_count, 1))),
      batch_rows_bytes_(plan_.items.size(), 0),
      init_failures_(static_cast<std::size_t>(std::max(plan_.node_count, 1)), 0) {}

ParallelBook ParallelBook::restore(ParallelPlan plan, std::int64_t epoch, Millis created_at,
                                   const std::vector<ParallelBatchRecord>& batches,
                                   std::optional<TryError> first_error) {
  ParallelBook book(std::move(plan), epoch, created_at);
  std::vector<parallel::BatchState> states;
  states.reserve(batches.size());
  for (std::size_t i = 0; i < batches.size(); ++i) {
    states.push_back(batches[i].state);
    book.holder_rank_[i] = batches[i].node_rank;
    book.holder_epoch_[i] = batches[i].epoch;
    book.batch_rows_bytes_[i] = batches[i].state.done ? batches[i].rows_bytes : 0;
    book.rows_bytes_ += book.batch_rows_bytes_[i];
  }
  book.scheduler_ =
      parallel::Scheduler::restore(std::move(states), book.plan_.rules, std::move(first_error));
  for (int i = 0; i < book.size(); ++i) {
    auto in_flight = book.scheduler_.in_flight(i);
    int rank = book.holder_rank_[i];
    if (in_flight && rank >= 0 && rank < static_cast<int>(book.held_by_rank_.size()) &&
        book.holder_epoch_[i] == book.epoch_)
      book.held_by_rank_[rank][in_flight->ticket] = i;
  }
  return book;
}

void ParallelBook::hold(int mini_batch, int rank, std::uint64_t ticket) {
  holder_rank_[mini_batch] = rank;
  holder_epoch_[mini_batch] = epoch_;
  held_by_rank_[rank][ticket] = mini_batch;
  dirty_.insert(mini_batch);
}

void ParallelBook::unhold(int mini_batch) {
  int rank = holder_rank_[mini_batch];
  if (rank >= 0 && rank < static_cast<int>(held_by_rank_.size())) {
    auto& held = held_by_rank_[rank];
    for (auto it = held.begin(); it != held.end(); ++it) {
      if (it->second == mini_batch) {
        held.erase(it);
        break;
      }
    }
  }
  holder_rank_[mini_batch] = -1;
  dirty_.insert(mini_batch);
}

void ParallelBook::release(int mini_batch) {
  auto held = scheduler_.in_flight(mini_batch);
  if (!held) return;
  unhold(mini_batch);
  scheduler_.release(*held);
}

void ParallelBook::enter_epoch(std::int64_t epoch) {
  if (epoch <= epoch_) return;
  epoch_ = epoch;
  plan_dirty_ = true;
  // Every hand-out in flight is an older epoch's now.
  for (auto& held : held_by_rank_) {
    std::vector<int> batches;
    for (const auto& [ticket, mini_batch] : held) batches.push_back(mini_batch);
    for (int mini_batch : batches) release(mini_batch);
    held.clear();
  }
  for (int i = 0; i < scheduler_.size(); ++i)
    if (scheduler_.in_flight(i)) release(i);  // one restored from a store of an older epoch
  // The nodes of the new epoch start afresh: init() failures and departures were the old ones'.
  std::fill(init_failures_.begin(), init_failures_.end(), 0);
  left_.clear();
}

bool ParallelBook::counts(const Assignment& assignment, int rank) const {
  if (rank < 0 || rank >= static_cast<int>(held_by_rank_.size())) return false;
  auto held = held_by_rank_[rank].find(assignment.ticket);
  return held != held_by_rank_[rank].end() && held->second == assignment.mini_batch &&
         verdict() == RunVerdict::Running;
}

ParallelAnswer ParallelBook::exchange(const ParallelExchange& exchange, Millis now) {
  ParallelAnswer answer;
  int rank = exchange.node_rank;
  bool had_error = scheduler_.first_error().has_value();
  for (const auto& outcome : exchange.outcomes) {
    const Assignment& a = outcome.assignment;
    if (!counts(a, rank)) continue;
    auto in_flight = scheduler_.in_flight(a.mini_batch);
    if (!in_flight || in_flight->ticket != a.ticket) continue;
    // The scheduler's own attempt number, not the node's word for it.
    bool counted = outcome.ok ? scheduler_.succeeded(*in_flight, outcome.items, outcome.rows)
                              : scheduler_.failed(*in_flight, outcome.error, outcome.items);
    if (!counted) continue;
    unhold(a.mini_batch);
    if (outcome.ok) {
      batch_rows_bytes_[a.mini_batch] = outcome.rows_bytes;
      rows_bytes_ += outcome.rows_bytes;
    }
  }
  if (!had_error && scheduler_.first_error()) plan_dirty_ = true;
  // What the node was handed and no longer holds never reached it, or it let go: back it goes.
  std::unordered_set<std::uint64_t> held(exchange.held.begin(), exchange.held.end());
  if (rank >= 0 && rank < static_cast<int>(held_by_rank_.size())) {
    std::vector<int> gone;
    for (const auto& [ticket, mini_batch] : held_by_rank_[rank])
      if (!held.count(ticket)) gone.push_back(mini_batch);
    for (int mini_batch : gone) release(mini_batch);
  }
  if (!left_error_ && !exchange.init_error.message.empty()) {
    left_error_ = exchange.init_error;
    plan_dirty_ = true;
  }
  if (rank >= 0 && rank < static_cast<int>(init_failures_.size())) {
    init_failures_[rank] = std::max(init_failures_[rank], exchange.init_failures);
    int total = 0;
    for (int failures : init_failures_) total += failures;
    int limit = 2 * plan_.node_count * plan_.workers_per_node;
    if (failure_.empty() && total >= limit && now - created_at_ >= kInitFailureWindow) {
      failure_ = "init() failed " + std::to_string(total) +
                 " times on the run's nodes (2 x node_count x process_count_per_node) after " +
                 std::to_string(kInitFailureWindow / 1000) + " s";
      plan_dirty_ = true;
    }
  }
  if (!exchange.leaving.empty() && !left_.count(rank)) {
    left_.insert(rank);
    if (left_reason_.empty()) left_reason_ = exchange.leaving;
    if (!left_error_ && !exchange.leaving_error.message.empty()) {
      left_error_ = exchange.leaving_error;
      plan_dirty_ = true;
    }
    if (static_cast<int>(left_.size()) >= plan_.node_count && failure_.empty()) {
      failure_ = "every node stopped taking mini-batches: " + left_reason_;
      plan_dirty_ = true;
    }
  }
  if (exchange.leaving.empty() && !left_.count(rank))
    hand_out(rank, exchange.want, answer.assignments);
  ParallelAnswer current = status();
  current.assignments = std::move(answer.assignments);
  return current;
}

void ParallelBook::hand_out(int node_rank, int want, std::vector<Assignment>& out) {
  while (want-- > 0 && verdict() == RunVerdict::Running) {
    auto next = scheduler_.next();
    if (!next) break;
    hold(next->mini_batch, node_rank, next->ticket);
    out.push_back(*next);
  }
}

void ParallelBook::fail(const std::string& why) {
  if (!failure_.empty()) return;
  failure_ = why;
  plan_dirty_ = true;
}

RunVerdict ParallelBook::verdict() const {
  return failure_.empty() ? scheduler_.verdict() : RunVerdict::Failed;
}

std::string ParallelBook::failure() const {
  return failure_.empty() ? scheduler_.failure() : failure_;
}

ParallelAnswer ParallelBook::status() const {
  ParallelAnswer answer;
  answer.verdict = verdict();
  answer.failure = failure();
  answer.first_error = scheduler_.first_error() ? scheduler_.first_error() : left_error_;
  answer.progress = scheduler_.progress();
  return answer;
}

std::optional<std::uint64_t> ParallelBook::counted_ticket(int mini_batch) const {
  if (mini_batch < 0 || mini_batch >= size()) return std::nullopt;
  const auto& state = scheduler_.batch_state(mini_batch);
  if (!state.done) return std::nullopt;
  return state.ticket;
}

ParallelBatchRecord ParallelBook::record(int mini_batch) const {
  ParallelBatchRecord out;
  out.state = scheduler_.batch_state(mini_batch);
  out.node_rank = holder_rank_[mini_batch];
  out.epoch = holder_epoch_[mini_batch];
  out.rows_bytes = batch_rows_bytes_[mini_batch];
  return out;
}

std::vector<int> ParallelBook::take_dirty() {
  std::vector<int> out(dirty_.begin(), dirty_.end());
  dirty_.clear();
  return out;
}

bool ParallelBook::take_plan_dirty() {
  return std::exchange(plan_dirty_, false);
}

nlohmann::json ParallelBook::plan_json() const {
  return {{"digest", plan_.digest},
          {"items", plan_.items},
          {"run_max_try", plan_.rules.run_max_try},
          {"error_threshold", plan_.rules.error_threshold},
          {"allowed_failed_count", plan_.rules.allowed_failed_count},
          {"allowed_failed_percent", plan_.rules.allowed_failed_percent},
          {"count_missing_rows", plan_.rules.count_missing_rows},
          {"node_count", plan_.node_count},
          {"workers_per_node", plan_.workers_per_node},
          {"epoch", epoch_},
          {"created_at", created_at_},
          {"failure", failure_},
          {"first_error", error_json(scheduler_.first_error())},
          {"init_error", error_json(left_error_)}};
}

nlohmann::json ParallelBook::record_json(int mini_batch) const {
  ParallelBatchRecord r = record(mini_batch);
  return {{"items", r.state.items},
          {"tries", r.state.tries},
          {"done", r.state.done},
          {"failed_last", r.state.failed_last},
          {"given_up", r.state.given_up},
          {"in_flight", r.state.in_flight},
          {"ticket", r.state.ticket},
          {"missing_rows", r.state.missing_rows},
          {"rows", r.state.rows},
          {"node_rank", r.node_rank},
          {"epoch", r.epoch},
          {"rows_bytes", r.rows_bytes}};
}

std::optional<ParallelBook> ParallelBook::from_store(
    const nlohmann::json& plan_json, const std::vector<std::pair<int, nlohmann::json>>& records) {
  auto plan = plan_from_json(plan_json);
  if (!plan) return std::nullopt;
  try {
    std::vector<ParallelBatchRecord> batches(plan->items.size());
    for (std::size_t i = 0; i < batches.size(); ++i) batches[i].state.items = plan->items[i];
    for (const auto& [index, in] : records) {
      if (index < 0 || index >= static_cast<int>(batches.size())) return std::nullopt;
      ParallelBatchRecord& r = batches[index];
      r.state.items = in.at("items").get<std::int64_t>();
      r.state.tries = in.at("tries").get<int>();
      r.state.done = in.at("done").get<bool>();
      r.state.failed_last = in.at("failed_last").get<bool>();
      r.state.given_up = in.at("given_up").get<bool>();
      r.state.in_flight = in.at("in_flight").get<bool>();
      r.state.ticket = in.at("ticket").get<std::uint64_t>();
      r.state.missing_rows = in.at("missing_rows").get<std::int64_t>();
      r.state.rows = in.at("rows").get<std::int64_t>();
      r.node_rank = in.at("node_rank").get<int>();
      r.epoch = in.at("epoch").get<std::int64_t>();
      r.rows_bytes = in.at("rows_bytes").get<std::uint64_t>();
    }
    auto book = restore(std::move(*plan), plan_json.at("epoch").get<std::int64_t>(),
                        plan_json.at("created_at").get<Millis>(), batches,
                        error_from_json(plan_json.value("first_error", nlohmann::json())));
    book.failure_ = plan_json.value("failure", "");
    book.left_error_ = error_from_json(plan_json.value("init_error", nlohmann::json()));
    return book;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

std::optional<ParallelPlan> ParallelBook::plan_from_json(const nlohmann::json& in) {
  try {
    ParallelPlan plan;
    plan.digest = in.at("digest").get<std::string>();
    plan.items = in.at("items").get<std::vector<std::int64_t>>();
    plan.rules.run_max_try = in.at("run_max_try").get<int>();
    plan.rules.error_threshold = in.at("error_threshold").get<std::int64_t>();
    plan.rules.allowed_failed_count = in.at("allowed_failed_count").get<std::int64_t>();
    plan.rules.allowed_failed_percent = in.at("allowed_failed_percent").get<double>();
    plan.rules.count_missing_rows = in.at("count_missing_rows").get<bool>();
    plan.node_count = in.at("node_count").get<int>();
    plan.workers_per_node = in.at("workers_per_node").get<int>();
    return plan;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

}  // namespace amlnode::controlplane
