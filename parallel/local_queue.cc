// The in-process queue of `amlnode run` and of a ParallelRunStep on one node of the daemon.

#include <fstream>
#include <map>

#include "parallel/mini_batch_queue.h"

namespace amlnode::parallel {
namespace {

class LocalQueue final : public MiniBatchQueue {
 public:
  explicit LocalQueue(const QueuePlan& plan) : scheduler_(plan.items, plan.rules) {}

  std::optional<Assignment> next() override { return scheduler_.next(); }
  bool report(TryOutcome outcome) override {
    if (!outcome.ok) {
      return scheduler_.failed(outcome.assignment, std::move(outcome.error), outcome.items);
    }
    if (!scheduler_.succeeded(outcome.assignment, outcome.items, outcome.rows)) return false;
    rows_files_[outcome.assignment.mini_batch] = outcome.rows_file;
    return true;
  }
  Result<void> sync(int, bool) override { return ok(); }
  // The only node leaving ends the run: nothing is left to take its mini-batches.
  Result<void> leave(const std::string& why, const TryError& first_error) override {
    left_ = why;
    left_error_ = first_error;
    return ok();
  }
  void count_init_failure(const TryError&) override {}

  RunVerdict verdict() const override {
    return left_.empty() ? scheduler_.verdict() : RunVerdict::Failed;
  }
  std::string failure() const override { return left_.empty() ? scheduler_.failure() : left_; }
  std::optional<TryError> first_error() const override {
    return left_.empty() ? scheduler_.first_error() : left_error_;
  }
  Progress progress() const override { return scheduler_.progress(); }

  bool writes_output() const override { return true; }
  Result<void> write_output(const std::filesystem::path& target) override {
    std::ofstream out(target, std::ios::binary | std::ios::trunc);
    std::vector<char> buffer(1 << 16);
    for (const auto& [mini_batch, file] : rows_files_) {
      // A run() that returned no rows left an empty file (or none): nothing to copy.
      std::ifstream in(file, std::ios::binary);
      while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0)
        out.write(buffer.data(), in.gcount());
    }
    out.close();
    if (out.bad() || out.fail())
      return Error{"OutputError", "the output file " + target.string() + " could not be written"};
    return ok();
  }

 private:
  Scheduler scheduler_;
  std::map<int, std::filesystem::path> rows_files_;  // mini-batch -> its counted try's rows
  std::string left_;
  std::optional<TryError> left_error_;
};

}  // namespace

std::unique_ptr<MiniBatchQueue> make_local_queue(const QueuePlan& plan) {
  return std::make_unique<LocalQueue>(plan);
}

}  // namespace amlnode::parallel
