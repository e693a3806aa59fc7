#pragma once

// The bodies of a ParallelRunStep's calls across nodes (docs/protocol.md, "Mini-batches"), read
// strictly: every failure names the field or the byte, as the other request bodies do.
//
// An exchange is one JSON line, then the rows of its successful outcomes, back to back in the
// outcomes' order (each outcome's rows_bytes says how many are its own): rows are whatever the
// entry script returned, not necessarily UTF-8, so they do not travel inside the JSON.

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "controlplane/parallel_book.h"

namespace amlnode::controlplane {

inline constexpr std::size_t kMaxParallelOutcomes = 4096;
inline constexpr std::size_t kMaxParallelHeld = 4096;
inline constexpr std::size_t kMaxParallelMessage = 64 * 1024;
// An exchange's JSON line (the rows after it are not parsed), and the counts in it: a hostile
// client's numbers must not overflow the scheduler's sums.
inline constexpr std::size_t kMaxParallelJsonLine = 2 << 20;
inline constexpr std::int64_t kMaxParallelCount = std::int64_t{1} << 40;

struct ParallelOpen {
  int node_rank = 0;
  ParallelPlan plan;
};
Result<ParallelOpen> parse_parallel_open(std::string_view body);

struct ParallelExchangeBody {
  ParallelExchange exchange;
  double wait_seconds = 0;
  // Each outcome's rows (empty for failures), by the outcomes' order.
  std::vector<std::string_view> rows;
};
// The views in `rows` point into `body`.
Result<ParallelExchangeBody> parse_parallel_exchange(std::string_view body, double max_wait);

nlohmann::json parallel_answer_json(const ParallelAnswer& answer);

}  // namespace amlnode::controlplane
