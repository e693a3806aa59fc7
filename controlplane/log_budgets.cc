#include "controlplane/log_budgets.h"

#include <algorithm>

namespace amlnode::controlplane {

namespace {

std::uint64_t left(std::uint64_t used, std::uint64_t limit) {
  return used >= limit ? 0 : limit - used;
}

}  // namespace

std::uint64_t LogBudgets::run_bytes(const std::string& run_id) {
  auto found = run_bytes_.find(run_id);
  if (found != run_bytes_.end()) return found->second;
  std::uint64_t total = 0;
  for (const auto& [stream, length] : logs_.list(run_id)) total += length;
  run_bytes_.emplace(run_id, total);
  return total;
}

LogBudgets::Room LogBudgets::room(const std::string& run_id, std::uint64_t stream_length,
                                  const std::vector<std::string>& node_runs) {
  std::uint64_t node_total = 0;
  for (const auto& id : node_runs) node_total += run_bytes(id);
  Room room{left(stream_length, limits_.stream), "stream", limits_.stream};
  for (const auto& [bytes, budget, limit] :
       {Room{left(run_bytes(run_id), limits_.run), "run", limits_.run},
        Room{left(node_total, limits_.node), "node", limits_.node}}) {
    if (bytes < room.bytes) room = Room{bytes, budget, limit};
  }
  return room;
}

void LogBudgets::appended(const std::string& run_id, std::uint64_t bytes) {
  run_bytes_[run_id] = run_bytes(run_id) + bytes;
}

bool LogBudgets::first_refusal(const std::string& run_id, const std::string& stream) {
  return refused_.emplace(run_id, stream).second;
}

void LogBudgets::forget(const std::string& run_id) {
  run_bytes_.erase(run_id);
  std::erase_if(refused_, [&run_id](const auto& key) { return key.first == run_id; });
}

}  // namespace amlnode::controlplane
