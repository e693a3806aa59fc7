#pragma once

// A background thread that runs tasks in submission order and hands each result back to the
// thread that owns the server's state. The server has two: the store writer, which wraps every
// batch of queued tasks in one SQLite transaction (group commit), and the file worker, which
// fsyncs and renames uploaded snapshots and outputs so a large fsync never delays a commit.

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/result.h"

namespace amlnode::controlplane {

class Worker {
 public:
  using Task = std::function<Result<void>()>;
  using Done = std::function<void(Result<void>)>;
  // Delivers a completion to the owning thread (the server posts it onto its io_context).
  using PostBack = std::function<void(std::function<void()>)>;

  // Optional hooks around each batch; a failed commit fails every task of the batch.
  struct BatchHooks {
    std::function<Result<void>()> begin;
    std::function<Result<void>()> commit;
    std::function<void()> rollback;
  };

  Worker(PostBack post_back, std::optional<BatchHooks> hooks = std::nullopt,
         std::size_t max_batch = 1024);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Queues `tasks` to run together; `done` gets the first failure, or success. The queue is not
  // bounded by count: every submitter is a request holding its connection until `done`, so the
  // connection limit bounds it.
  void submit(std::vector<Task> tasks, Done done);

  // Submitted batches whose tasks have not finished yet. Readers use it as a barrier: an answer
  // that reflects state is sent only once no write of that state is still pending.
  std::size_t pending() const { return pending_.load(); }

  // Finishes everything already submitted, then joins the thread. Idempotent.
  void stop();

 private:
  struct Item {
    std::vector<Task> tasks;
    Done done;
  };
  void loop();
  void run_batch(std::deque<Item>& batch);

  PostBack post_back_;
  std::optional<BatchHooks> hooks_;
  std::size_t max_batch_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::atomic<std::size_t> pending_{0};
  std::thread thread_;
};

}  // namespace amlnode::controlplane
