// A ParallelRunStep's mini-batches across nodes, as the control plane books them: hand-outs per
// node rank and epoch, what a node no longer holds, the rules across nodes, a restart, and the
// bodies nodes send, refused by field.

#include "controlplane/parallel_book.h"

#include <catch2/catch.hpp>

#include "controlplane/parallel_bodies.h"

using namespace amlnode;
using namespace amlnode::controlplane;
using parallel::Assignment;
using parallel::RunVerdict;

namespace {

ParallelPlan plan_of(int batches, int nodes = 2) {
  ParallelPlan plan;
  plan.digest = "d";
  plan.items.assign(batches, 2);
  plan.rules.run_max_try = 2;
  plan.node_count = nodes;
  plan.workers_per_node = 2;
  return plan;
}

ParallelExchange want(int rank, int count, std::vector<std::uint64_t> held = {}) {
  ParallelExchange exchange;
  exchange.node_rank = rank;
  exchange.want = count;
  exchange.held = std::move(held);
  return exchange;
}

ParallelOutcome success(const Assignment& a, std::uint64_t rows_bytes = 4) {
  ParallelOutcome outcome;
  outcome.assignment = a;
  outcome.ok = true;
  outcome.items = 2;
  outcome.rows = 2;
  outcome.rows_bytes = rows_bytes;
  return outcome;
}

std::vector<std::uint64_t> tickets(const std::vector<Assignment>& assignments) {
  std::vector<std::uint64_t> out;
  for (const auto& a : assignments) out.push_back(a.ticket);
  return out;
}

}  // namespace

TEST_CASE("mini-batches go to the node ranks that ask, and each outcome counts once",
          "[controlplane][parallel]") {
  ParallelBook book(plan_of(4), 1, 0);
  auto first = book.exchange(want(0, 2), 0).assignments;
  auto second = book.exchange(want(1, 2), 0).assignments;
  REQUIRE(first.size() == 2);
  REQUIRE(second.size() == 2);
  CHECK(first[0].mini_batch == 0);
  CHECK(second[0].mini_batch == 2);
  // Another node rank cannot report what it was not handed, nor store rows for it.
  CHECK(book.counts(first[0], 0));
  CHECK_FALSE(book.counts(first[0], 1));
  auto stolen = want(1, 0, tickets(second));
  stolen.outcomes = {success(first[0])};
  book.exchange(stolen, 0);
  CHECK(book.status().progress.processed == 0);
  auto report = want(0, 0, {first[1].ticket});
  report.outcomes = {success(first[0])};
  CHECK(book.exchange(report, 0).progress.processed == 1);
  // The same exchange sent again (its answer was lost) counts nothing more.
  CHECK(book.exchange(report, 0).progress.processed == 1);
  CHECK(book.rows_bytes() == 4);
  CHECK(book.counted_ticket(0) == first[0].ticket);
  CHECK_FALSE(book.counted_ticket(1));
}

TEST_CASE(
    "what a node no longer holds goes back to the queue, and a new epoch takes back the old one's",
    "[controlplane][parallel]") {
  ParallelBook book(plan_of(3), 1, 0);
  auto handed = book.exchange(want(0, 2), 0).assignments;
  REQUIRE(handed.size() == 2);
  // The node names only the first: the second never reached it.
  book.exchange(want(0, 0, {handed[0].ticket}), 0);
  CHECK(book.status().progress.in_flight == 1);
  auto other = book.exchange(want(1, 1), 0).assignments;
  REQUIRE(other.size() == 1);
  CHECK(other[0].mini_batch == handed[1].mini_batch);
  CHECK(other[0].attempt == 1);  // not counted as a try
  book.enter_epoch(2);
  CHECK(book.status().progress.in_flight == 0);
  // An outcome of the old epoch's hand-out no longer counts.
  auto late = want(0, 0);
  late.outcomes = {success(handed[0])};
  CHECK(book.exchange(late, 0).progress.processed == 0);
  CHECK(book.exchange(want(0, 3), 0).assignments.size() == 3);
}

TEST_CASE("every node leaving after init() failures fails the run, naming why",
          "[controlplane][parallel]") {
  ParallelBook book(plan_of(2), 1, 0);
  auto leave = want(0, 0);
  leave.leaving = "init() failed 6 times on this node (3 x process_count_per_node)";
  leave.leaving_error = {"RuntimeError: no model", "Traceback ..."};
  leave.init_failures = 6;
  CHECK(book.exchange(leave, 1000).verdict == RunVerdict::Running);
  // A node that left gets nothing more.
  CHECK(book.exchange(want(0, 2), 1000).assignments.empty());
  leave.node_rank = 1;
  auto answer = book.exchange(leave, 2000);
  CHECK(answer.verdict == RunVerdict::Failed);
  CHECK_THAT(answer.failure, Catch::Contains("every node stopped taking mini-batches"));
  REQUIRE(answer.first_error);
  CHECK(answer.first_error->message == "RuntimeError: no model");
}

TEST_CASE(
    "init() failing 2 x node_count x process_count_per_node times fails the run after 2 minutes",
    "[controlplane][parallel]") {
  ParallelBook book(plan_of(2), 1, 0);
  auto failures = want(0, 0);
  failures.init_failures = 4;
  book.exchange(failures, 1000);
  failures.node_rank = 1;
  failures.init_failures = 4;
  CHECK(book.exchange(failures, 60'000).verdict == RunVerdict::Running);  // 8, but too early
  auto answer = book.exchange(failures, ParallelBook::kInitFailureWindow);
  CHECK(answer.verdict == RunVerdict::Failed);
  CHECK_THAT(answer.failure, Catch::Contains("init() failed 8 times"));
}

TEST_CASE("a book stored and read back goes on where it was", "[controlplane][parallel]") {
  ParallelBook book(plan_of(4), 3, 77);
  auto handed = book.exchange(want(0, 3), 0).assignments;
  auto report = want(0, 0, {handed[1].ticket, handed[2].ticket});
  report.outcomes = {success(handed[0], 10)};
  book.exchange(report, 0);
  std::vector<std::pair<int, nlohmann::json>> records;
  for (int i : book.take_dirty()) records.emplace_back(i, book.record_json(i));
  auto restored = ParallelBook::from_store(book.plan_json(), records);
  REQUIRE(restored);
  CHECK(restored->epoch() == 3);
  CHECK(restored->created_at() == 77);
  CHECK(restored->rows_bytes() == 10);
  CHECK(restored->counted_ticket(0) == handed[0].ticket);
  // The hand-outs in flight still count, under the same tickets.
  auto again = want(0, 0, {handed[2].ticket});
  again.outcomes = {success(handed[1])};
  CHECK(restored->exchange(again, 0).progress.processed == 2);
  auto rest = restored->exchange(want(1, 4), 0).assignments;
  REQUIRE(rest.size() == 1);
  CHECK(rest[0].mini_batch == 3);
  CHECK(rest[0].ticket > handed[2].ticket);
  // A plan that is not one is refused, not half read.
  CHECK_FALSE(ParallelBook::from_store(nlohmann::json{{"digest", "d"}}, {}));
  CHECK_FALSE(ParallelBook::from_store(book.plan_json(), {{9, book.record_json(0)}}));
}

TEST_CASE("an exchange body is refused by the field or byte that is wrong",
          "[controlplane][parallel]") {
  auto refused = [](std::string_view body) {
    auto parsed = parse_parallel_exchange(body, 60);
    REQUIRE_FALSE(parsed);
    return parsed.error().message;
  };
  CHECK_THAT(refused("{\"want\": 1}\n"), Catch::Contains("node_rank"));
  CHECK_THAT(refused("{\"node_rank\": 0, \"want\": 100000}\n"), Catch::Contains("want"));
  CHECK_THAT(refused("{\"node_rank\": 0, \"outcomes\": [{\"mini_batch\": 0, \"attempt\": 1, "
                     "\"ticket\": 1, \"ok\": true, \"rows_bytes\": 5}]}\nabc"),
             Catch::Contains("outcomes[0].rows_bytes: 5 bytes of rows, but only 3 follow"));
  CHECK_THAT(refused("{\"node_rank\": 0, \"outcomes\": [{\"mini_batch\": 0, \"attempt\": 1, "
                     "\"ticket\": 1, \"ok\": true, \"rows_bytes\": 1}]}\nabc"),
             Catch::Contains("2 bytes after the rows"));
  CHECK_THAT(refused("{\"node_rank\": 0, \"outcomes\": [{\"mini_batch\": 0, \"attempt\": 1, "
                     "\"ticket\": 1, \"ok\": false, \"rows_bytes\": 1}]}\na"),
             Catch::Contains("a failed try has no rows"));
  CHECK_THAT(refused("{\"node_rank\": 0, \"outcomes\": [{\"mini_batch\": 0, \"attempt\": 1, "
                     "\"ticket\": 1}]}\n"),
             Catch::Contains("outcomes[0].ok"));
  CHECK_THAT(refused("{\"node_rank\": 0}\nrows without outcomes"), Catch::Contains("no outcomes"));
  CHECK_THAT(refused("{\"node_rank\": 0, \"outcomes\": [{\"mini_batch\": 0, \"attempt\": 1, "
                     "\"ticket\": 7, \"ok\": true}, {\"mini_batch\": 0, \"attempt\": 1, "
                     "\"ticket\": 7, \"ok\": true}]}\n"),
             Catch::Contains("outcomes[1].ticket: 7 is reported twice"));
  CHECK_THAT(refused("{\"node_rank\": 0, \"outcomes\": [{\"mini_batch\": 0, \"attempt\": 1, "
                     "\"ticket\": 7, \"ok\": true, \"rows\": 9999999999999999}]}\n"),
             Catch::Contains("outcomes[0].rows"));
  CHECK_THAT(refused("{\"node_rank\": 0, \"held\": [" + std::string(3 << 20, ' ') + "]}\n"),
             Catch::Contains("the JSON line is longer than"));
  CHECK_THAT(refused("{\"node_rank\": 0, \"held\": [-1]}\n"), Catch::Contains("held"));
  CHECK_THAT(refused("{\"node_rank\": 0, \"leaving\": {}}\n"), Catch::Contains("leaving.why"));
  // Rows are bytes, not text: what follows the JSON line is taken as it is.
  std::string body =
      "{\"node_rank\": 1, \"outcomes\": [{\"mini_batch\": 3, \"attempt\": 1, \"ticket\": 9, "
      "\"ok\": true, \"rows\": 1, \"rows_bytes\": 3}]}\n" +
      std::string("\xff\n\x00", 3);
  auto parsed = parse_parallel_exchange(body, 60);
  REQUIRE(parsed);
  REQUIRE(parsed->rows.size() == 1);
  CHECK(parsed->rows[0] == std::string_view("\xff\n\x00", 3));
}

TEST_CASE("an open body is refused by the field that is wrong", "[controlplane][parallel]") {
  auto refused = [](std::string_view body) {
    auto parsed = parse_parallel_open(body);
    REQUIRE_FALSE(parsed);
    return parsed.error().message;
  };
  std::string good =
      "\"node_rank\": 0, \"digest\": \"d\", \"run_max_try\": 3, \"error_threshold\": -1, "
      "\"allowed_failed_count\": -1, \"allowed_failed_percent\": -1, \"workers_per_node\": 2, "
      "\"count_missing_rows\": true";
  CHECK(parse_parallel_open("{" + good + ", \"items\": [1, 2]}"));
  CHECK_THAT(refused("{" + good + "}"), Catch::Contains("items"));
  CHECK_THAT(refused("{" + good + ", \"items\": [1, -2]}"), Catch::Contains("items[1]"));
  CHECK_THAT(refused("{\"node_rank\": 0, \"items\": []}"), Catch::Contains("digest"));
}
