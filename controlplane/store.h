#pragma once

// The persistence seam. The Cluster never talks to SQLite: it hands whole records to a Store, and
// the StoreWriter runs those calls on its own thread, many of them in one transaction.

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "controlplane/records.h"

namespace amlnode::controlplane {

// Everything a Store holds, as read back at start.
struct StoreContents {
  std::vector<NodeRecord> nodes;
  std::vector<RegistrationTokenRecord> registration_tokens;
  std::vector<ComputeRecord> computes;
  std::vector<RunRecord> runs;
  std::vector<LeaseRecord> leases;
  // Job texts of the runs that are not terminal yet: only those can still be leased.
  std::unordered_map<std::string, std::string> live_job_texts;
  // ParallelRunSteps across nodes (parallel_book.h): each run's plan, and its mini-batches'
  // records by mini-batch (only those that changed since the plan was made are stored).
  std::unordered_map<std::string, nlohmann::json> parallel_plans;
  std::unordered_map<std::string, std::vector<std::pair<int, nlohmann::json>>> parallel_batches;
};

class Store {
 public:
  virtual ~Store() = default;

  virtual Result<StoreContents> load() = 0;

  // Writes between begin() and commit() become visible and durable together.
  virtual Result<void> begin() = 0;
  virtual Result<void> commit() = 0;
  virtual void rollback() = 0;

  // Each put replaces the whole record with the same key.
  virtual Result<void> put_node(const NodeRecord& node) = 0;
  virtual Result<void> delete_node(const std::string& node_id) = 0;
  virtual Result<void> put_registration_token(const RegistrationTokenRecord& token) = 0;
  virtual Result<void> put_compute(const ComputeRecord& compute) = 0;
  virtual Result<void> delete_compute(const std::string& name) = 0;
  virtual Result<void> put_run(const RunRecord& run) = 0;
  virtual Result<void> put_job_text(const std::string& run_id, const std::string& text) = 0;
  virtual Result<void> put_lease(const LeaseRecord& lease) = 0;
  // A ParallelRunStep's mini-batches across nodes, as JSON text; deleted once the run has ended.
  virtual Result<void> put_parallel_plan(const std::string& run_id, const std::string& plan) = 0;
  virtual Result<void> put_parallel_batch(const std::string& run_id, int mini_batch,
                                          const std::string& state) = 0;
  virtual Result<void> delete_parallel(const std::string& run_id) = 0;
};

// One write the Cluster asks for, run later on the writer thread.
using StoreOp = std::function<Result<void>(Store&)>;

// SQLite in WAL mode with synchronous=NORMAL: a commit survives a crash of this process at once
// and a power cut from the next checkpoint on. Creates the schema on first use.
Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path);

}  // namespace amlnode::controlplane
