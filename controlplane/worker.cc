#include "controlplane/worker.h"

namespace amlnode::controlplane {

Worker::Worker(PostBack post_back, std::optional<BatchHooks> hooks, std::size_t max_batch)
    : post_back_(std::move(post_back)), hooks_(std::move(hooks)), max_batch_(max_batch) {
  thread_ = std::thread([this] { loop(); });
}

Worker::~Worker() {
  stop();
}

void Worker::submit(std::vector<Task> tasks, Done done) {
  pending_.fetch_add(1);
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(Item{std::move(tasks), std::move(done)});
  }
  wake_.notify_one();
}

void Worker::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Worker::loop() {
  for (;;) {
    std::deque<Item> batch;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything submitted is done
      while (!queue_.empty() && batch.size() < max_batch_) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    run_batch(batch);
  }
}

void Worker::run_batch(std::deque<Item>& batch) {
  Result<void> opened = hooks_ ? hooks_->begin() : ok();
  std::vector<Result<void>> results;
  results.reserve(batch.size());
  for (auto& item : batch) {
    Result<void> result = opened;
    for (auto& task : item.tasks) {
      if (!result) break;
      result = task();
    }
    results.push_back(std::move(result));
  }
  if (hooks_ && opened) {
    if (auto committed = hooks_->commit(); !committed) {
      hooks_->rollback();
      for (auto& result : results) result = committed;
    }
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    pending_.fetch_sub(1);
    if (batch[i].done) {
      post_back_([done = std::move(batch[i].done), result = std::move(results[i])]() mutable {
        done(std::move(result));
      });
    }
  }
}

}  // namespace amlnode::controlplane
