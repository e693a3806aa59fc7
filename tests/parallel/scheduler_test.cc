// The mini-batch scheduler's rules, driven directly: no workers, no clock.

#include "parallel/scheduler.h"

#include <catch2/catch.hpp>

using namespace amlnode::parallel;

namespace {

// Hands out every mini-batch there is now.
std::vector<Assignment> take_all(Scheduler& scheduler) {
  std::vector<Assignment> out;
  while (auto next = scheduler.next()) out.push_back(*next);
  return out;
}

TryError raised(const std::string& what) {
  return {"ValueError: " + what, "Traceback (most recent call last):\n  ...\nValueError: " + what};
}

}  // namespace

TEST_CASE("every mini-batch is handed out once, in order, and the run completes when all succeed",
          "[parallel][scheduler]") {
  Scheduler scheduler({10, 10, 3}, {});
  auto all = take_all(scheduler);
  REQUIRE(all.size() == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(all[i].mini_batch == i);
    CHECK(all[i].attempt == 1);
  }
  CHECK(scheduler.progress().scheduled == 3);
  CHECK(scheduler.progress().in_flight == 3);
  CHECK(scheduler.succeeded(all[2], 3, 3));
  CHECK(scheduler.succeeded(all[0], 10, 10));
  CHECK(scheduler.verdict() == RunVerdict::Running);
  CHECK(scheduler.succeeded(all[1], 10, 10));
  CHECK(scheduler.verdict() == RunVerdict::Completed);
  CHECK(scheduler.progress().rows == 23);
  CHECK_FALSE(scheduler.next());
}

TEST_CASE("a failed try is retried up to run_max_try, and a late success un-counts it",
          "[parallel][scheduler]") {
  SchedulerRules rules;
  rules.run_max_try = 2;
  rules.allowed_failed_count = 0;  // no mini-batch may stay failed
  rules.error_threshold = -1;
  Scheduler scheduler({1, 1}, rules);
  auto first = *scheduler.next();
  // One failed mini-batch is already over the limit of none: Azure ML fails at once.
  SECTION("over allowed_failed_count at the first failure") {
    CHECK(scheduler.failed(first, raised("bad input")));
    CHECK(scheduler.verdict() == RunVerdict::Failed);
    CHECK(scheduler.failure() ==
          "allowed_failed_count: 1 mini-batches failed, more than the 0 allowed");
    CHECK(scheduler.first_error()->message == "ValueError: bad input");
    CHECK_FALSE(scheduler.next());
  }
  SECTION("within the limit, retried first, and un-counted by a success") {
    Scheduler lenient({1, 1}, SchedulerRules{2, -1, 1, -1, true});
    auto a = *lenient.next();
    CHECK(lenient.failed(a, raised("flaky")));
    CHECK(lenient.progress().failed == 1);
    auto retry = *lenient.next();
    CHECK(retry.mini_batch == a.mini_batch);
    CHECK(retry.attempt == 2);
    CHECK(lenient.succeeded(retry, 1, 1));
    CHECK(lenient.progress().failed == 0);
    auto b = *lenient.next();
    CHECK(lenient.failed(b, raised("always")));
    auto b2 = *lenient.next();
    CHECK(lenient.failed(b2, raised("always")));
    // Tried run_max_try times: given up, one failed mini-batch, within the limit of one.
    CHECK_FALSE(lenient.next());
    CHECK(lenient.tries(b.mini_batch) == 2);
    CHECK(lenient.verdict() == RunVerdict::Completed);
    CHECK(lenient.progress().failed == 1);
    CHECK(lenient.first_error()->message == "ValueError: flaky");
  }
}

TEST_CASE("error_threshold counts failed items, and rows append_row did not get",
          "[parallel][scheduler]") {
  SECTION("a try that is retried counts no item yet") {
    Scheduler scheduler({3}, SchedulerRules{2, 0, -1, -1, true});
    auto first = *scheduler.next();
    CHECK(scheduler.failed(first, raised("worker killed")));
    CHECK(scheduler.progress().failed_items == 0);
    CHECK(scheduler.verdict() == RunVerdict::Running);
    auto last = *scheduler.next();
    CHECK(scheduler.failed(last, raised("again")));  // its last try: 3 items failed, over 0
    CHECK(scheduler.verdict() == RunVerdict::Failed);
  }
  SchedulerRules rules;
  rules.run_max_try = 1;
  rules.error_threshold = 5;
  SECTION("exactly at the threshold passes") {
    Scheduler scheduler({3, 3, 4}, rules);
    auto all = take_all(scheduler);
    CHECK(scheduler.failed(all[0], raised("x")));  // 3 items
    CHECK(scheduler.succeeded(all[1], 3, 1));      // 2 rows missing: 5
    CHECK(scheduler.succeeded(all[2], 4, 4));
    CHECK(scheduler.progress().failed_items == 5);
    CHECK(scheduler.verdict() == RunVerdict::Completed);
  }
  SECTION("one more item fails the run") {
    Scheduler scheduler({3, 3, 4}, rules);
    auto all = take_all(scheduler);
    CHECK(scheduler.failed(all[0], raised("x")));
    CHECK(scheduler.succeeded(all[1], 3, 0));
    CHECK(scheduler.verdict() == RunVerdict::Failed);
    CHECK(scheduler.failure() == "error_threshold: 6 items failed, more than the 5 allowed");
  }
  SECTION("summary_only counts no missing rows") {
    rules.count_missing_rows = false;
    Scheduler scheduler({3, 3}, rules);
    auto all = take_all(scheduler);
    CHECK(scheduler.succeeded(all[0], 3, 0));
    CHECK(scheduler.succeeded(all[1], 3, 0));
    CHECK(scheduler.verdict() == RunVerdict::Completed);
  }
}

TEST_CASE("allowed_failed_percent applies once every mini-batch has been handed out",
          "[parallel][scheduler]") {
  SchedulerRules rules;
  rules.run_max_try = 1;
  rules.allowed_failed_percent = 25;
  Scheduler scheduler({1, 1, 1, 1}, rules);
  auto a = *scheduler.next();
  auto b = *scheduler.next();
  CHECK(scheduler.failed(a, raised("one")));
  CHECK(scheduler.failed(b, raised("two")));
  // Half failed, but not every mini-batch has been scheduled: not checked yet.
  CHECK(scheduler.verdict() == RunVerdict::Running);
  scheduler.next();
  scheduler.next();  // the last one handed out: 2 of 4 failed is over 25%
  CHECK(scheduler.verdict() == RunVerdict::Failed);
  CHECK(scheduler.failure() ==
        "allowed_failed_percent: 2 of 4 mini-batches failed (50.0%), more than the 25% allowed");
}

TEST_CASE("an outcome for an older hand-out of a mini-batch changes nothing",
          "[parallel][scheduler]") {
  Scheduler scheduler({2}, SchedulerRules{3, -1, -1, -1, true});
  auto first = *scheduler.next();
  CHECK(scheduler.failed(first, {"worker lost", ""}));  // say, its worker was killed
  auto second = *scheduler.next();
  // The first worker's late answer is not the current try's.
  CHECK_FALSE(scheduler.succeeded(first, 2, 2));
  CHECK(scheduler.succeeded(second, 2, 2));
  CHECK_FALSE(scheduler.failed(second, {"again", ""}));
  CHECK(scheduler.verdict() == RunVerdict::Completed);
  CHECK(scheduler.progress().rows == 2);
}

TEST_CASE("a run with no mini-batches has nothing to do", "[parallel][scheduler]") {
  Scheduler scheduler({}, {});
  CHECK(scheduler.verdict() == RunVerdict::Completed);
  CHECK_FALSE(scheduler.next());
}

TEST_CASE("a released hand-out goes back first and its try is not counted",
          "[parallel][scheduler]") {
  Scheduler scheduler({1, 1, 1}, {.run_max_try = 1});
  auto first = scheduler.next();
  auto second = scheduler.next();
  REQUIRE((first && second));
  CHECK(scheduler.release(*second));
  CHECK_FALSE(scheduler.release(*second));  // stale now
  CHECK(scheduler.progress().in_flight == 1);
  auto again = scheduler.next();
  REQUIRE(again);
  CHECK(again->mini_batch == 1);
  CHECK(again->attempt == 1);  // with run_max_try 1 a counted try would have been the last
  CHECK(again->ticket != second->ticket);
  CHECK_FALSE(scheduler.succeeded(*second, 1, 1));
  CHECK(scheduler.succeeded(*again, 1, 1));
}

TEST_CASE("a scheduler restored from its mini-batches' states goes on where it was",
          "[parallel][scheduler]") {
  SchedulerRules rules{.run_max_try = 2, .error_threshold = 5};
  Scheduler scheduler({2, 2, 2, 2}, rules);
  auto all = take_all(scheduler);
  REQUIRE(all.size() == 4);
  CHECK(scheduler.succeeded(all[0], 2, 1));  // one row missing: a failed item
  CHECK(scheduler.failed(all[1], raised("bad")));
  std::vector<BatchState> states;
  for (int i = 0; i < scheduler.size(); ++i) states.push_back(scheduler.batch_state(i));
  auto restored = Scheduler::restore(states, rules, scheduler.first_error());
  Progress before = scheduler.progress();
  Progress after = restored.progress();
  CHECK(after.processed == before.processed);
  CHECK(after.failed == before.failed);
  CHECK(after.in_flight == before.in_flight);
  CHECK(after.failed_items == before.failed_items);
  CHECK(after.rows == before.rows);
  CHECK(after.scheduled == 4);
  // The retry of mini-batch 1 is next, with a ticket never used before; the old hand-outs of 2
  // and 3 still count.
  auto retry = restored.next();
  REQUIRE(retry);
  CHECK(retry->mini_batch == 1);
  CHECK(retry->attempt == 2);
  CHECK(retry->ticket > all[3].ticket);
  CHECK(restored.succeeded(all[2], 2, 2));
  CHECK(restored.succeeded(all[3], 2, 2));
  CHECK(restored.succeeded(*retry, 2, 2));
  CHECK(restored.verdict() == RunVerdict::Completed);
  REQUIRE(restored.first_error());
  CHECK(restored.first_error()->message == "ValueError: bad");
}
