// ParallelRunStep across nodes: the Cluster's side of parallel_book.h. Each share of the run opens
// the book with its cut of the inputs, then exchanges outcomes for mini-batches under the run's
// epoch; every change is stored with the rest of the Cluster's changes.

#include "controlplane/cluster.h"

namespace amlnode::controlplane {

namespace {

Error conflict(const std::string& message) {
  return Error{kConflict, message};
}

}  // namespace

void Cluster::load_parallel(StoreContents& contents) {
  for (auto& [run_id, plan] : contents.parallel_plans) {
    auto run = runs_.find(run_id);
    if (run == runs_.end() || spec::is_terminal(run->second.record.status)) {
      // The run ended before its mini-batches were forgotten: forget them now.
      changes_.push_back([id = run_id](Store& store) { return store.delete_parallel(id); });
      ended_parallel_runs_.push_back(run_id);
      continue;
    }
    auto book = ParallelBook::from_store(plan, contents.parallel_batches[run_id]);
    // A book that cannot be read back is made again by the next share to open it: its mini-batches
    // run again, which costs time, never a row twice (rows count per try of the new book).
    if (book) run->second.parallel = std::make_shared<ParallelBook>(std::move(*book));
  }
}

void Cluster::save_parallel(const std::string& run_id, ParallelBook& book) {
  if (book.take_plan_dirty()) {
    changes_.push_back([run_id, plan = book.plan_json().dump()](Store& store) {
      return store.put_parallel_plan(run_id, plan);
    });
  }
  for (int mini_batch : book.take_dirty()) {
    changes_.push_back(
        [run_id, mini_batch, state = book.record_json(mini_batch).dump()](Store& store) {
          return store.put_parallel_batch(run_id, mini_batch, state);
        });
  }
}

void Cluster::forget_parallel(RunState& run) {
  if (!run.parallel) return;
  run.parallel.reset();
  changes_.push_back([id = run.record.run_id](Store& store) { return store.delete_parallel(id); });
  ended_parallel_runs_.push_back(run.record.run_id);
}

Result<ParallelAnswer> Cluster::open_parallel(const std::string& run_id, int node_rank,
                                              ParallelPlan plan) {
  auto found = runs_.find(run_id);
  if (found == runs_.end()) return Error{kNotFound, "no run " + run_id};
  RunState& run = found->second;
  const RunRecord& r = run.record;
  if (spec::is_terminal(r.status)) return Error{kStaleEpoch, "run " + run_id + " has ended"};
  if (node_rank < 0 || node_rank >= r.node_count)
    return Error{kInvalidRequest, "node_rank " + std::to_string(node_rank) + " is not one of the " +
                                      std::to_string(r.node_count) + " nodes of the run"};
  if (plan.items.size() > kMaxParallelMiniBatches)
    return Error{kInvalidRequest, "the inputs make " + std::to_string(plan.items.size()) +
                                      " mini-batches, more than the " +
                                      std::to_string(kMaxParallelMiniBatches) +
                                      " a run may have: make mini_batch_size larger"};
  plan.node_count = r.node_count;
  if (!run.parallel) {
    run.parallel = std::make_shared<ParallelBook>(std::move(plan), r.epoch, now_millis());
    changes_.push_back([run_id, text = run.parallel->plan_json().dump()](Store& store) {
      return store.put_parallel_plan(run_id, text);
    });
    return run.parallel->status();
  }
  ParallelBook& book = *run.parallel;
  if (book.plan().digest != plan.digest || book.plan().items.size() != plan.items.size()) {
    return conflict("node rank " + std::to_string(node_rank) + " cut the inputs into " +
                    std::to_string(plan.items.size()) + " mini-batches (digest " + plan.digest +
                    ") unlike the run's " + std::to_string(book.plan().items.size()) + " (digest " +
                    book.plan().digest +
                    "): every node of a ParallelRunStep must see the same inputs");
  }
  book.enter_epoch(r.epoch);
  save_parallel(run_id, book);
  return book.status();
}

Result<ParallelAnswer> Cluster::exchange_parallel(const std::string& run_id,
                                                  const ParallelExchange& exchange) {
  auto found = runs_.find(run_id);
  if (found == runs_.end()) return Error{kNotFound, "no run " + run_id};
  RunState& run = found->second;
  if (!run.parallel)
    return conflict("run " + run_id + " has no mini-batches yet: a share opens them first");
  if (exchange.node_rank < 0 || exchange.node_rank >= run.record.node_count)
    return Error{kInvalidRequest, "node_rank " + std::to_string(exchange.node_rank) +
                                      " is not one of the run's nodes"};
  ParallelBook& book = *run.parallel;
  book.enter_epoch(run.record.epoch);
  auto answer = book.exchange(exchange, now_millis());
  save_parallel(run_id, book);
  return answer;
}

bool Cluster::parallel_counts(const std::string& run_id, int rank,
                              const parallel::Assignment& assignment) {
  auto found = runs_.find(run_id);
  if (found == runs_.end() || !found->second.parallel) return false;
  ParallelBook& book = *found->second.parallel;
  book.enter_epoch(found->second.record.epoch);
  save_parallel(run_id, book);
  return book.counts(assignment, rank);
}

void Cluster::fail_parallel(const std::string& run_id, const std::string& why) {
  auto found = runs_.find(run_id);
  if (found == runs_.end() || !found->second.parallel) return;
  found->second.parallel->fail(why);
  save_parallel(run_id, *found->second.parallel);
}

Result<const ParallelBook*> Cluster::parallel_book(const std::string& run_id) const {
  auto found = runs_.find(run_id);
  if (found == runs_.end()) return Error{kNotFound, "no run " + run_id};
  if (!found->second.parallel)
    return conflict("run " + run_id + " has no mini-batches yet: a share opens them first");
  return found->second.parallel.get();
}

std::vector<std::string> Cluster::take_ended_parallel_runs() {
  std::vector<std::string> out;
  out.swap(ended_parallel_runs_);
  return out;
}

}  // namespace amlnode::controlplane
