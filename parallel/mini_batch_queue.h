#pragma once

// Where a node's workers get their mini-batches and where each try's outcome goes: the seam
// between the node driver (which runs the workers) and the scheduler (which decides). On one node
// the Scheduler runs in the driver's process (make_local_queue); across nodes it runs in the
// control plane, and the agent provides a queue that leases mini-batches from it
// (agent/daemon/parallel_client.h). The driver is the same either way.

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "parallel/scheduler.h"

namespace amlnode::parallel {

struct TryOutcome {
  Assignment assignment;
  bool ok = false;
  std::int64_t items = 0;
  std::int64_t rows = 0;
  TryError error;  // when !ok
  // When ok with append_row: the file holding the rows the try returned (the worker wrote it).
  std::filesystem::path rows_file;
};

class MiniBatchQueue {
 public:
  virtual ~MiniBatchQueue() = default;

  // The next mini-batch for a free worker of this node; nullopt when none is here now.
  virtual std::optional<Assignment> next() = 0;
  // A try's outcome. Returns false when it was known at once not to count (a stale ticket).
  virtual bool report(TryOutcome outcome) = 0;
  // Brings the queue up to date: delivers what was reported and asks for more mini-batches when
  // this node runs short. `free_workers`: ready and waiting for a mini-batch. `idle`: no worker
  // of the node is busy, so the call may wait (bounded) for a mini-batch or for the run's end. An
  // error ends this node's part; its message says why.
  virtual Result<void> sync(int free_workers, bool idle) = 0;
  // This node stops taking mini-batches (init() failed 3 x its worker count here): whether the
  // run can go on without it is the scheduler's to decide (verdict()).
  virtual Result<void> leave(const std::string& why, const TryError& first_error) = 0;
  // An init() failure on this node (the rule across nodes counts them together).
  virtual void count_init_failure(const TryError& error) = 0;

  virtual RunVerdict verdict() const = 0;
  virtual std::string failure() const = 0;
  virtual std::optional<TryError> first_error() const = 0;
  virtual Progress progress() const = 0;

  // Whether this node writes the run's append_row output (one node does).
  virtual bool writes_output() const = 0;
  // Writes every counted try's rows, in mini-batch order, to `target` (a temporary name the
  // caller renames).
  virtual Result<void> write_output(const std::filesystem::path& target) = 0;
};

// The mini-batches of a node as its queue is made from them: their item counts, and a digest of
// what they hold (every node of a run must cut the same ones).
struct QueuePlan {
  std::vector<std::int64_t> items;
  std::string digest;
  SchedulerRules rules;
  int workers = 1;
};

using QueueFactory = std::function<Result<std::unique_ptr<MiniBatchQueue>>(const QueuePlan&)>;

// The in-process Scheduler: every outcome counts at once and the rows files stay where the workers
// wrote them until the output is assembled.
std::unique_ptr<MiniBatchQueue> make_local_queue(const QueuePlan& plan);

}  // namespace amlnode::parallel
