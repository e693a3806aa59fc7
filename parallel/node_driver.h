#pragma once

// One node's part of a ParallelRunStep (docs/parallel-run.md): `amlnode parallel-node`, the run's
// process under its shim. It cuts the inputs into mini-batches, starts the worker processes
// (python/amlnode_parallel/worker.py), hands mini-batches out through the Scheduler, enforces
// run_invocation_timeout (the worker is killed and replaced), and at the end writes the output
// (append_row: each counted try's rows, in mini-batch order, once), the progress and result
// files. Its exit code is the run's: 0 when the scheduler completed, 1 when it failed (the error
// in <state_dir>/error.json and on stderr).

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "parallel/mini_batch_queue.h"
#include "parallel/mini_batches.h"
#include "parallel/scheduler.h"

namespace amlnode::parallel {

struct NodeInput {
  std::string name;
  std::filesystem::path path;
  InputKind kind = InputKind::Files;
  std::string format = "delimited";  // tables: delimited, json_lines or parquet
  std::string separator = ",";
  bool header = true;
};

// What the plan tells the node (as JSON in $AMLNODE_PRS_SPEC).
struct NodeSpec {
  std::string python = "python";
  std::filesystem::path entry_script;  // absolute
  std::vector<std::string> arguments;
  int workers = 1;
  std::vector<NodeInput> inputs;  // the split ones; side inputs are only staged
  std::optional<std::string> mini_batch_size;
  std::vector<std::string> partition_keys;  // file datasets: a mini-batch per combination
  std::string partition_format;
  SchedulerRules rules;
  std::int64_t run_invocation_timeout = 60;
  bool append_rows = true;
  std::string append_row_file_name = "parallel_run_step.txt";
  std::string logging_level = "INFO";  // the EntryScript logger's (AMLNODE_PRS_LOGGING_LEVEL)
  std::filesystem::path outputs_dir;   // wd/outputs
  std::filesystem::path logs_dir;      // wd/logs
  std::filesystem::path state_dir;     // <run>/parallel: rows, error.json
};

nlohmann::json node_spec_json(const NodeSpec& spec);
Result<NodeSpec> read_node_spec(const std::string& text);

// Runs the node's workers to the end; returns the process's exit code. Mini-batches come from the
// queue `make_queue` makes (the in-process scheduler when it is empty).
int run_parallel_node(const NodeSpec& spec, const QueueFactory& make_queue = {});

// What every node of a run must agree on: a digest of the mini-batches, naming files relative to
// their inputs (each node stages them in its own run folder).
std::string mini_batch_digest(const NodeSpec& spec, const std::vector<MiniBatch>& batches);

// The mini-batches of the spec's inputs (all of one kind).
Result<std::vector<MiniBatch>> node_mini_batches(const NodeSpec& spec);

}  // namespace amlnode::parallel
