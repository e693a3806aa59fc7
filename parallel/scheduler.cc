#include "parallel/scheduler.h"

#include <algorithm>
#include <cstdio>

namespace amlnode::parallel {

Scheduler::Scheduler(std::vector<std::int64_t> items, SchedulerRules rules) : rules_(rules) {
  batches_.reserve(items.size());
  for (auto count : items) batches_.push_back(Batch{count});
  if (batches_.empty()) verdict_ = RunVerdict::Completed;
}

Scheduler Scheduler::restore(std::vector<BatchState> states, SchedulerRules rules,
                             std::optional<TryError> first_error) {
  Scheduler scheduler({}, rules);
  scheduler.verdict_ = RunVerdict::Running;
  scheduler.batches_ = std::move(states);
  scheduler.first_error_ = std::move(first_error);
  int size = static_cast<int>(scheduler.batches_.size());
  // Handed out in order: everything up to the last one tried has been scheduled.
  for (int i = 0; i < size; ++i) {
    const Batch& batch = scheduler.batches_[i];
    if (batch.tries > 0 || batch.in_flight) scheduler.next_fresh_ = i + 1;
    scheduler.next_ticket_ = std::max(scheduler.next_ticket_, batch.ticket + 1);
  }
  for (int i = 0; i < size; ++i) {
    const Batch& batch = scheduler.batches_[i];
    scheduler.in_flight_ += batch.in_flight ? 1 : 0;
    scheduler.failed_batches_ += batch.failed_last ? 1 : 0;
    scheduler.processed_ += batch.done ? 1 : 0;
    scheduler.given_up_ += batch.given_up ? 1 : 0;
    scheduler.rows_ += batch.done ? batch.rows : 0;
    scheduler.failed_items_ += batch.given_up ? batch.items : 0;
    scheduler.failed_items_ += batch.done ? batch.missing_rows : 0;
    if (i < scheduler.next_fresh_ && !batch.done && !batch.given_up && !batch.in_flight)
      scheduler.retries_.push_back(i);
  }
  scheduler.check_rules();
  if (scheduler.verdict_ == RunVerdict::Running && scheduler.all_settled())
    scheduler.verdict_ = RunVerdict::Completed;
  return scheduler;
}

std::optional<Assignment> Scheduler::in_flight(int mini_batch) const {
  if (mini_batch < 0 || mini_batch >= size() || !batches_[mini_batch].in_flight)
    return std::nullopt;
  const Batch& batch = batches_[mini_batch];
  return Assignment{mini_batch, batch.tries, batch.ticket};
}

bool Scheduler::release(const Assignment& assignment) {
  if (!current(assignment)) return false;
  Batch& batch = batches_[assignment.mini_batch];
  batch.in_flight = false;
  batch.tries -= 1;
  in_flight_ -= 1;
  retries_.push_front(assignment.mini_batch);
  return true;
}

std::optional<Assignment> Scheduler::next() {
  if (verdict_ != RunVerdict::Running) return std::nullopt;
  int index = -1;
  if (!retries_.empty()) {
    index = retries_.front();
    retries_.pop_front();
  } else if (next_fresh_ < static_cast<int>(batches_.size())) {
    index = next_fresh_++;
  } else {
    return std::nullopt;
  }
  Batch& batch = batches_[index];
  batch.tries += 1;
  batch.in_flight = true;
  batch.ticket = next_ticket_++;
  in_flight_ += 1;
  // The last mini-batch handed out for the first time: allowed_failed_percent applies now.
  check_rules();
  return Assignment{index, batch.tries, batch.ticket};
}

bool Scheduler::current(const Assignment& assignment) const {
  if (assignment.mini_batch < 0 || assignment.mini_batch >= static_cast<int>(batches_.size()))
    return false;
  const Batch& batch = batches_[assignment.mini_batch];
  return batch.in_flight && batch.ticket == assignment.ticket;
}

bool Scheduler::succeeded(const Assignment& assignment, std::int64_t items, std::int64_t rows) {
  if (!current(assignment)) return false;
  Batch& batch = batches_[assignment.mini_batch];
  batch.in_flight = false;
  in_flight_ -= 1;
  if (batch.failed_last) {
    // A retry that succeeds no longer counts against the limits.
    batch.failed_last = false;
    failed_batches_ -= 1;
  }
  if (items > 0) batch.items = items;
  batch.done = true;
  processed_ += 1;
  batch.rows = rows;
  rows_ += rows;
  if (rules_.count_missing_rows && rows < batch.items) {
    batch.missing_rows = batch.items - rows;
    failed_items_ += batch.missing_rows;
  }
  check_rules();
  if (verdict_ == RunVerdict::Running && all_settled()) verdict_ = RunVerdict::Completed;
  return true;
}

bool Scheduler::failed(const Assignment& assignment, TryError error, std::int64_t items) {
  if (!current(assignment)) return false;
  Batch& batch = batches_[assignment.mini_batch];
  if (items > 0) batch.items = items;
  batch.in_flight = false;
  in_flight_ -= 1;
  if (!first_error_) first_error_ = std::move(error);
  if (!batch.failed_last) {
    batch.failed_last = true;
    failed_batches_ += 1;
  }
  if (batch.tries >= rules_.run_max_try) {
    batch.given_up = true;
    given_up_ += 1;
    failed_items_ += batch.items;  // its items failed for good
  } else {
    retries_.push_back(assignment.mini_batch);
  }
  check_rules();
  if (verdict_ == RunVerdict::Running && all_settled()) verdict_ = RunVerdict::Completed;
  return true;
}

void Scheduler::check_rules() {
  if (verdict_ != RunVerdict::Running) return;
  if (rules_.error_threshold >= 0 && failed_items_ > rules_.error_threshold) {
    return fail_run("error_threshold: " + std::to_string(failed_items_) +
                    " items failed, more than the " + std::to_string(rules_.error_threshold) +
                    " allowed");
  }
  if (rules_.allowed_failed_count >= 0 && failed_batches_ > rules_.allowed_failed_count) {
    return fail_run("allowed_failed_count: " + std::to_string(failed_batches_) +
                    " mini-batches failed, more than the " +
                    std::to_string(rules_.allowed_failed_count) + " allowed");
  }
  bool all_scheduled = next_fresh_ == static_cast<int>(batches_.size());
  double percent = 100.0 * failed_batches_ / static_cast<double>(batches_.size());
  if (rules_.allowed_failed_percent >= 0 && all_scheduled &&
      percent > rules_.allowed_failed_percent) {
    char text[160];
    std::snprintf(text, sizeof text,
                  "allowed_failed_percent: %d of %zu mini-batches failed (%.1f%%), more than the "
                  "%g%% allowed",
                  failed_batches_, batches_.size(), percent, rules_.allowed_failed_percent);
    return fail_run(text);
  }
}

void Scheduler::fail_run(std::string why) {
  verdict_ = RunVerdict::Failed;
  failure_ = std::move(why);
}

bool Scheduler::all_settled() const {
  return in_flight_ == 0 && retries_.empty() &&
         processed_ + given_up_ == static_cast<int>(batches_.size());
}

Progress Scheduler::progress() const {
  Progress out;
  out.total = static_cast<int>(batches_.size());
  out.scheduled = next_fresh_;  // handed out in order, each the first time once
  out.processed = processed_;
  out.failed = failed_batches_;
  out.in_flight = in_flight_;
  out.failed_items = failed_items_;
  out.rows = rows_;
  return out;
}

std::string to_string(RunVerdict verdict) {
  switch (verdict) {
    case RunVerdict::Running:
      return "Running";
    case RunVerdict::Completed:
      return "Completed";
    case RunVerdict::Failed:
      return "Failed";
  }
  return "Running";
}

}  // namespace amlnode::parallel
