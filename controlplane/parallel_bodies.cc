#include "controlplane/parallel_bodies.h"

#include <set>

#include "controlplane/cluster.h"
#include "controlplane/json_fields.h"

namespace amlnode::controlplane {

namespace {

Result<int> node_rank_of(const nlohmann::json& body) {
  auto rank = integer_field(body, "node_rank", "node_rank", 0, wire::kMaxNodeCount - 1);
  if (!rank) return rank.error();
  if (!*rank) return missing_field("node_rank");
  return static_cast<int>(**rank);
}

// A required integer field of `object`, named `path` in messages.
Result<std::int64_t> required_integer(const nlohmann::json& object, const char* field,
                                      const std::string& path, std::int64_t min, std::int64_t max) {
  auto value = integer_field(object, field, path, min, max);
  if (!value) return value.error();
  if (!*value) return missing_field(path);
  return **value;
}

Result<parallel::TryError> try_error(const nlohmann::json& object, const std::string& path) {
  auto message = string_field(object, "message", path + ".message", kMaxParallelMessage);
  if (!message) return message.error();
  auto traceback = string_field(object, "traceback", path + ".traceback", kMaxParallelMessage);
  if (!traceback) return traceback.error();
  return parallel::TryError{message->value_or(""), traceback->value_or("")};
}

Result<ParallelOutcome> outcome_of(const nlohmann::json& in, const std::string& path) {
  if (!in.is_object())
    return invalid_request(path + ": expected an object, got " + json_type_name(in));
  ParallelOutcome out;
  auto mini_batch = required_integer(in, "mini_batch", path + ".mini_batch", 0,
                                     static_cast<std::int64_t>(Cluster::kMaxParallelMiniBatches));
  if (!mini_batch) return mini_batch.error();
  auto attempt = required_integer(in, "attempt", path + ".attempt", 1, 1 << 20);
  if (!attempt) return attempt.error();
  auto ticket = required_integer(in, "ticket", path + ".ticket", 1, INT64_MAX);
  if (!ticket) return ticket.error();
  auto items = integer_field(in, "items", path + ".items", 0, kMaxParallelCount);
  if (!items) return items.error();
  auto rows = integer_field(in, "rows", path + ".rows", 0, kMaxParallelCount);
  if (!rows) return rows.error();
  auto rows_bytes = integer_field(in, "rows_bytes", path + ".rows_bytes", 0, INT64_MAX);
  if (!rows_bytes) return rows_bytes.error();
  auto ok = in.find("ok");
  if (ok == in.end() || !ok->is_boolean())
    return invalid_request(path + ".ok: expected true or false");
  out.assignment = {static_cast<int>(*mini_batch), static_cast<int>(*attempt),
                    static_cast<std::uint64_t>(*ticket)};
  out.ok = ok->get<bool>();
  out.items = items->value_or(0);
  out.rows = rows->value_or(0);
  out.rows_bytes = static_cast<std::uint64_t>(rows_bytes->value_or(0));
  if (!out.ok && out.rows_bytes > 0)
    return invalid_request(path + ".rows_bytes: a failed try has no rows");
  if (!out.ok) {
    auto error = try_error(in, path);
    if (!error) return error.error();
    out.error = std::move(*error);
  }
  return out;
}

}  // namespace

Result<ParallelOpen> parse_parallel_open(std::string_view text) {
  auto body = parse_json_object(text);
  if (!body) return body.error();
  ParallelOpen open;
  auto rank = node_rank_of(*body);
  if (!rank) return rank.error();
  open.node_rank = *rank;
  auto digest = string_field(*body, "digest", "digest", 128);
  if (!digest) return digest.error();
  if (!*digest) return missing_field("digest");
  open.plan.digest = **digest;
  auto items = body->find("items");
  if (items == body->end() || !items->is_array())
    return invalid_request("items: expected an array");
  if (items->size() > Cluster::kMaxParallelMiniBatches)
    return invalid_request("items: more than " + std::to_string(Cluster::kMaxParallelMiniBatches) +
                           " mini-batches");
  open.plan.items.reserve(items->size());
  for (std::size_t i = 0; i < items->size(); ++i) {
    const auto& item = (*items)[i];
    if (!item.is_number_integer() || item.get<std::int64_t>() < 0 ||
        item.get<std::int64_t>() > kMaxParallelCount)
      return invalid_request("items[" + std::to_string(i) + "]: expected a count, got " +
                             item.dump());
    open.plan.items.push_back(item.get<std::int64_t>());
  }
  auto max_try = required_integer(*body, "run_max_try", "run_max_try", 1, 1000);
  if (!max_try) return max_try.error();
  auto threshold = required_integer(*body, "error_threshold", "error_threshold", -1, INT64_MAX);
  if (!threshold) return threshold.error();
  auto failed_count =
      required_integer(*body, "allowed_failed_count", "allowed_failed_count", -1, INT64_MAX);
  if (!failed_count) return failed_count.error();
  auto percent = number_field(*body, "allowed_failed_percent", "allowed_failed_percent", -1, 100);
  if (!percent) return percent.error();
  if (!*percent) return missing_field("allowed_failed_percent");
  auto workers = required_integer(*body, "workers_per_node", "workers_per_node", 1, 1024);
  if (!workers) return workers.error();
  auto missing_rows = body->find("count_missing_rows");
  if (missing_rows == body->end() || !missing_rows->is_boolean())
    return invalid_request("count_missing_rows: expected true or false");
  open.plan.rules = {static_cast<int>(*max_try), *threshold, *failed_count, **percent,
                     missing_rows->get<bool>()};
  open.plan.workers_per_node = static_cast<int>(*workers);
  return open;
}

Result<ParallelExchangeBody> parse_parallel_exchange(std::string_view text, double max_wait) {
  auto newline = text.find('\n');
  if ((newline == std::string_view::npos ? text.size() : newline) > kMaxParallelJsonLine)
    return invalid_request("the JSON line is longer than " + std::to_string(kMaxParallelJsonLine) +
                           " bytes: send fewer outcomes at a time");
  std::string_view head = text.substr(0, newline);
  std::string_view rest = newline == std::string_view::npos ? "" : text.substr(newline + 1);
  auto body = parse_json_object(head);
  if (!body) return body.error();
  ParallelExchangeBody out;
  auto rank = node_rank_of(*body);
  if (!rank) return rank.error();
  out.exchange.node_rank = *rank;
  auto want = integer_field(*body, "want", "want", 0, Cluster::kMaxParallelWant);
  if (!want) return want.error();
  out.exchange.want = static_cast<int>(want->value_or(0));
  auto init_failures = integer_field(*body, "init_failures", "init_failures", 0, 1 << 20);
  if (!init_failures) return init_failures.error();
  out.exchange.init_failures = static_cast<int>(init_failures->value_or(0));
  auto wait = number_field(*body, "wait_seconds", "wait_seconds", 0, max_wait);
  if (!wait) return wait.error();
  out.wait_seconds = wait->value_or(0);
  auto init_error = object_field(*body, "init_error", "init_error");
  if (!init_error) return init_error.error();
  if (*init_error) {
    auto error = try_error(**init_error, "init_error");
    if (!error) return error.error();
    out.exchange.init_error = std::move(*error);
  }
  auto leaving = object_field(*body, "leaving", "leaving");
  if (!leaving) return leaving.error();
  if (*leaving) {
    auto why = string_field(**leaving, "why", "leaving.why", kMaxParallelMessage);
    if (!why) return why.error();
    if (!*why || (*why)->empty()) return missing_field("leaving.why");
    out.exchange.leaving = **why;
    auto error = try_error(**leaving, "leaving");
    if (!error) return error.error();
    out.exchange.leaving_error = std::move(*error);
  }
  auto held = body->find("held");
  if (held != body->end() && !held->is_null()) {
    if (!held->is_array() || held->size() > kMaxParallelHeld)
      return invalid_request("held: expected an array of at most " +
                             std::to_string(kMaxParallelHeld) + " tickets");
    for (const auto& ticket : *held) {
      if (!ticket.is_number_unsigned())
        return invalid_request("held: expected tickets, got " + ticket.dump());
      out.exchange.held.push_back(ticket.get<std::uint64_t>());
    }
  }
  auto outcomes = body->find("outcomes");
  if (outcomes != body->end() && !outcomes->is_null()) {
    if (!outcomes->is_array() || outcomes->size() > kMaxParallelOutcomes)
      return invalid_request("outcomes: expected an array of at most " +
                             std::to_string(kMaxParallelOutcomes) + " outcomes");
    std::size_t at = 0;
    std::set<std::uint64_t> tickets;
    for (std::size_t i = 0; i < outcomes->size(); ++i) {
      auto outcome = outcome_of((*outcomes)[i], "outcomes[" + std::to_string(i) + "]");
      if (!outcome) return outcome.error();
      if (!tickets.insert(outcome->assignment.ticket).second)
        return invalid_request("outcomes[" + std::to_string(i) +
                               "].ticket: " + std::to_string(outcome->assignment.ticket) +
                               " is reported twice in one exchange");
      if (outcome->rows_bytes > rest.size() - at)
        return invalid_request("outcomes[" + std::to_string(i) + "].rows_bytes: " +
                               std::to_string(outcome->rows_bytes) + " bytes of rows, but only " +
                               std::to_string(rest.size() - at) + " follow the JSON line");
      out.rows.push_back(rest.substr(at, outcome->rows_bytes));
      at += outcome->rows_bytes;
      out.exchange.outcomes.push_back(std::move(*outcome));
    }
    if (at != rest.size())
      return invalid_request(std::to_string(rest.size() - at) +
                             " bytes after the rows the outcomes account for");
  } else if (!rest.empty()) {
    return invalid_request("rows follow the JSON line, but it has no outcomes");
  }
  return out;
}

nlohmann::json parallel_answer_json(const ParallelAnswer& answer) {
  nlohmann::json assignments = nlohmann::json::array();
  for (const auto& a : answer.assignments)
    assignments.push_back(
        {{"mini_batch", a.mini_batch}, {"attempt", a.attempt}, {"ticket", a.ticket}});
  const auto& p = answer.progress;
  nlohmann::json out = {{"assignments", assignments},
                        {"verdict", parallel::to_string(answer.verdict)},
                        {"failure", answer.failure},
                        {"progress",
                         {{"total", p.total},
                          {"scheduled", p.scheduled},
                          {"processed", p.processed},
                          {"failed", p.failed},
                          {"in_flight", p.in_flight},
                          {"failed_items", p.failed_items},
                          {"rows", p.rows}}}};
  out["first_error"] = answer.first_error
                           ? nlohmann::json{{"message", answer.first_error->message},
                                            {"traceback", answer.first_error->traceback}}
                           : nlohmann::json();
  return out;
}

}  // namespace amlnode::controlplane
