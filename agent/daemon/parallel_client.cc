#include "agent/daemon/parallel_client.h"

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/error_codes.h"
#include "parallel/node_driver.h"

namespace amlnode::agent {

namespace fs = std::filesystem;
using json = nlohmann::json;
using parallel::Assignment;
using parallel::RunVerdict;
using parallel::TryError;
using Clock = std::chrono::steady_clock;

namespace {

// One try's rows go to the control plane in one exchange; more than this fails the try. With the
// pending limits below an exchange stays within the control plane's 16 MiB body and 2 MiB JSON.
constexpr std::uint64_t kMaxRowsPerTry = 6 << 20;
// Outcomes held back at most before they are sent: their count, rows and error text.
constexpr std::size_t kMaxPendingOutcomes = 256;
constexpr std::uint64_t kMaxPendingBytes = 6 << 20;
constexpr std::size_t kMaxPendingText = 1 << 20;
constexpr std::size_t kMaxErrorText = 16 << 10;  // a try's message, and its traceback
// The control plane's limits on one exchange (controlplane/parallel_bodies.h).
constexpr int kMaxWant = 1024;
constexpr std::size_t kMaxHeld = 4096;
// How long a node with nothing to do waits in one call for a mini-batch or the run's end.
constexpr double kIdleWaitSeconds = 10;
// The work a node keeps queued per worker beyond what it runs: about this much, at most kMaxAhead.
constexpr double kAheadSeconds = 0.05;
constexpr int kMaxAhead = 8;
constexpr std::uint64_t kMaxOutputAnswer = 64 << 20;

std::string cut(const std::string& text) {
  return text.size() <= kMaxErrorText ? text : text.substr(0, kMaxErrorText) + "\n[cut]";
}

std::optional<TryError> try_error_from(const json& in) {
  if (!in.is_object()) return std::nullopt;
  return TryError{in.value("message", ""), in.value("traceback", "")};
}

class ControlPlaneQueue final : public parallel::MiniBatchQueue {
 public:
  ControlPlaneQueue(ShareLaunchEnv env, std::unique_ptr<HttpClient> client,
                    const parallel::QueuePlan& plan)
      : env_(std::move(env)), client_(std::move(client)), workers_(plan.workers) {}

  Result<void> open(const parallel::QueuePlan& plan) {
    json body = {{"node_rank", env_.node_rank},
                 {"digest", plan.digest},
                 {"items", plan.items},
                 {"run_max_try", plan.rules.run_max_try},
                 {"error_threshold", plan.rules.error_threshold},
                 {"allowed_failed_count", plan.rules.allowed_failed_count},
                 {"allowed_failed_percent", plan.rules.allowed_failed_percent},
                 {"count_missing_rows", plan.rules.count_missing_rows},
                 {"workers_per_node", plan.workers}};
    auto answer = call("open", body.dump(), 0);
    if (!answer.ok()) return answer.error();
    return take_answer(*answer);
  }

  std::optional<Assignment> next() override {
    if (local_.empty() || verdict_ != RunVerdict::Running) return std::nullopt;
    Assignment next = local_.front();
    local_.pop_front();
    started_[next.ticket] = Clock::now();
    return next;
  }

  bool report(parallel::TryOutcome outcome) override {
    auto started = started_.find(outcome.assignment.ticket);
    if (started != started_.end()) {
      double seconds = std::chrono::duration<double>(Clock::now() - started->second).count();
      average_try_ = average_try_ < 0 ? seconds : 0.8 * average_try_ + 0.2 * seconds;
      started_.erase(started);
    }
    Pending pending{std::move(outcome), {}};
    if (pending.outcome.ok && !pending.outcome.rows_file.empty()) read_rows(pending);
    pending.outcome.error.message = cut(pending.outcome.error.message);
    pending.outcome.error.traceback = cut(pending.outcome.error.traceback);
    std::size_t text =
        pending.outcome.error.message.size() + pending.outcome.error.traceback.size();
    // What is pending goes first when this one would take an exchange past its limits.
    if (!pending_.empty() && deferred_.ok() &&
        (pending_bytes_ + pending.rows.size() > kMaxPendingBytes ||
         pending_text_ + text > kMaxPendingText || pending_.size() >= kMaxPendingOutcomes))
      deferred_ = exchange(0, 0);
    pending_bytes_ += pending.rows.size();
    pending_text_ += text;
    pending_.push_back(std::move(pending));
    return true;
  }

  Result<void> sync(int free, bool idle) override {
    if (!deferred_.ok()) return std::exchange(deferred_, ok());
    // A node that left only waits for the verdict (and sends what it still has).
    if (!leaving_.empty())
      return verdict_ == RunVerdict::Running ? exchange(0, kIdleWaitSeconds) : ok();
    // No look-ahead before a try has been timed: the first node to ask must not take everything.
    int ahead = 0;
    if (average_try_ >= 0)
      ahead =
          std::clamp(static_cast<int>(kAheadSeconds / std::max(average_try_, 1e-6)), 0, kMaxAhead);
    int target = verdict_ == RunVerdict::Running ? free + ahead * workers_ : 0;
    target = std::min(target, std::max(0, static_cast<int>(kMaxHeld - started_.size())));
    bool short_of_work = static_cast<int>(local_.size()) < free ||
                         static_cast<int>(local_.size()) * 2 < target - free;
    bool flush =
        !pending_.empty() && (short_of_work || idle || pending_.size() >= kMaxPendingOutcomes ||
                              pending_bytes_ >= kMaxPendingBytes ||
                              Clock::now() - last_exchange_ > std::chrono::seconds(1));
    if (!flush && !(short_of_work && target > static_cast<int>(local_.size()))) return ok();
    if (!flush && verdict_ != RunVerdict::Running) return ok();
    // Asked again for nothing: at most every 50 ms while its workers run (a retry may come back).
    if (!flush && !idle && Clock::now() - last_exchange_ < std::chrono::milliseconds(50))
      return ok();
    int want = std::min(kMaxWant, std::max(0, target - static_cast<int>(local_.size())));
    bool wait = idle && local_.empty() && pending_.empty() && want > 0;
    return exchange(want, wait ? kIdleWaitSeconds : 0);
  }

  Result<void> leave(const std::string& why, const TryError& first_error) override {
    leaving_ = why;
    leaving_error_ = first_error;
    local_.clear();
    started_.clear();  // its workers are gone: what they ran goes back
    return exchange(0, 0);
  }

  void count_init_failure(const TryError& error) override {
    ++init_failures_;
    if (first_init_error_.message.empty())
      first_init_error_ = {cut(error.message), cut(error.traceback)};
  }

  RunVerdict verdict() const override { return verdict_; }
  std::string failure() const override { return failure_; }
  std::optional<TryError> first_error() const override { return first_error_; }
  parallel::Progress progress() const override { return progress_; }

  bool writes_output() const override { return env_.node_rank == 0; }

  Result<void> write_output(const fs::path& target) override {
    std::ofstream out(target, std::ios::binary | std::ios::trunc);
    int from = 0;
    while (from < progress_.total) {
      HttpRequest request;
      request.target = "/v1/runs/" + env_.run_id + "/parallel/output?from=" + std::to_string(from);
      request.bearer_token = env_.token;
      request.max_response_bytes = kMaxOutputAnswer;
      auto answer = send_with_retries(request);
      if (!answer.ok()) return answer.error();
      if (answer->status != 200) return refused("reading the output", *answer);
      out.write(answer->body.data(), static_cast<std::streamsize>(answer->body.size()));
      int next = 0;
      std::string header = answer->header("X-Amlnode-Next-Mini-Batch");
      std::from_chars(header.data(), header.data() + header.size(), next);
      if (next <= from) {
        return Error{"ProtocolError", "the control plane's output answer did not move on from " +
                                          std::to_string(from)};
      }
      from = next;
    }
    out.close();
    if (!out) return Error{"OutputError", "writing " + target.string() + " failed"};
    return ok();
  }

 private:
  struct Pending {
    parallel::TryOutcome outcome;
    std::string rows;
  };

  // The rows the worker wrote, moved into memory (the file goes); more than kMaxRowsPerTry, or
  // none where the worker said it returned some, fail the try.
  void read_rows(Pending& pending) {
    std::error_code ec;
    auto size = fs::file_size(pending.outcome.rows_file, ec);
    auto fail = [&](std::string why) {
      pending.outcome.ok = false;
      pending.outcome.error = {std::move(why), ""};
      pending.rows.clear();
    };
    if (ec) {
      if (pending.outcome.rows > 0)
        fail("the worker reported " + std::to_string(pending.outcome.rows) +
             " rows but left no rows file");
      return;
    }
    if (size > kMaxRowsPerTry) {
      pending.outcome.ok = false;
      pending.outcome.error = {"run() returned " + std::to_string(size) +
                                   " bytes of rows for one mini-batch, more than the " +
                                   std::to_string(kMaxRowsPerTry) +
                                   " one mini-batch may send to the control plane",
                               ""};
    } else {
      std::ifstream in(pending.outcome.rows_file, std::ios::binary);
      pending.rows.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (pending.rows.size() != size) fail("the rows file could not be read whole");
    }
    fs::remove(pending.outcome.rows_file, ec);
  }

  Result<void> exchange(int want, double wait_seconds) {
    json outcomes = json::array();
    std::string rows;
    for (const auto& pending : pending_) {
      const auto& o = pending.outcome;
      json item = {{"mini_batch", o.assignment.mini_batch},
                   {"attempt", o.assignment.attempt},
                   {"ticket", o.assignment.ticket},
                   {"ok", o.ok},
                   {"items", o.items},
                   {"rows", o.rows},
                   {"rows_bytes", pending.rows.size()}};
      if (!o.ok) {
        item["message"] = o.error.message;
        item["traceback"] = o.error.traceback;
      }
      outcomes.push_back(std::move(item));
      rows += pending.rows;
    }
    json held = json::array();
    for (const auto& assignment : local_) held.push_back(assignment.ticket);
    for (const auto& [ticket, started] : started_) held.push_back(ticket);
    json body = {{"node_rank", env_.node_rank},     {"want", want}, {"wait_seconds", wait_seconds},
                 {"init_failures", init_failures_}, {"held", held}, {"outcomes", outcomes}};
    if (!first_init_error_.message.empty()) {
      body["init_error"] = {{"message", first_init_error_.message},
                            {"traceback", first_init_error_.traceback}};
    }
    if (!leaving_.empty()) {
      body["leaving"] = {{"why", cut(leaving_)},
                         {"message", cut(leaving_error_.message)},
                         {"traceback", cut(leaving_error_.traceback)}};
    }
    std::string text = body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n" + rows;
    auto answer = call("exchange", std::move(text), wait_seconds);
    last_exchange_ = Clock::now();
    if (!answer.ok()) return answer.error();
    pending_.clear();
    pending_bytes_ = 0;
    pending_text_ = 0;
    return take_answer(*answer);
  }

  Result<void> take_answer(const json& answer) {
    try {
      for (const auto& a : answer.at("assignments"))
        local_.push_back(Assignment{a.at("mini_batch").get<int>(), a.at("attempt").get<int>(),
                                    a.at("ticket").get<std::uint64_t>()});
      std::string verdict = answer.at("verdict").get<std::string>();
      verdict_ = verdict == "Completed" ? RunVerdict::Completed
                 : verdict == "Failed"  ? RunVerdict::Failed
                                        : RunVerdict::Running;
      failure_ = answer.value("failure", "");
      first_error_ = try_error_from(answer.value("first_error", json()));
      const json& p = answer.at("progress");
      progress_ = {p.at("total").get<int>(),        p.at("scheduled").get<int>(),
                   p.at("processed").get<int>(),    p.at("failed").get<int>(),
                   p.at("in_flight").get<int>(),    p.at("failed_items").get<std::int64_t>(),
                   p.at("rows").get<std::int64_t>()};
      return ok();
    } catch (const json::exception& e) {
      return Error{"ProtocolError", std::string("the control plane's answer: ") + e.what()};
    }
  }

  Result<json> call(const std::string& action, std::string body, double wait_seconds) {
    HttpRequest request;
    request.method = "POST";
    request.target = "/v1/runs/" + env_.run_id + "/parallel/" + action;
    request.bearer_token = env_.token;
    request.content_type = action == "open" ? "application/json" : "application/octet-stream";
    request.body = std::move(body);
    request.timeout = std::chrono::milliseconds(30000 + static_cast<int>(wait_seconds * 1000));
    auto answer = send_with_retries(request);
    if (!answer.ok()) return answer.error();
    if (answer->status != 200) return refused(action, *answer);
    json parsed = json::parse(answer->body, nullptr, false);
    if (!parsed.is_object())
      return Error{"ProtocolError", "the control plane's answer is not JSON"};
    return parsed;
  }

  // Retries while the control plane is unreachable or busy (a restart, a full store), for at most
  // kParallelUnreachableLimit; the same exchange is sent again, which the control plane takes
  // once (an outcome it counted is stale the second time, and held names what this node has).
  Result<HttpResponse> send_with_retries(const HttpRequest& request) {
    auto give_up = Clock::now() + kParallelUnreachableLimit;
    auto delay = std::chrono::milliseconds(100);
    for (;;) {
      auto answer = client_->send(request);
      bool busy = answer.ok() && answer->status == 503;
      bool unreachable = !answer.ok() && answer.error().code == errors::kUnreachable;
      if ((!busy && !unreachable) || Clock::now() > give_up) return answer;
      std::this_thread::sleep_for(delay);
      delay = std::min(delay * 2, std::chrono::milliseconds(2000));
    }
  }

  static Error refused(const std::string& what, const HttpResponse& answer) {
    json body = json::parse(answer.body, nullptr, false);
    std::string message = body.is_object() && body.contains("error") && body["error"].is_object()
                              ? body["error"].value("message", "")
                              : answer.body.substr(0, 500);
    if (answer.status == 409 && body.is_object() && body.value("stop", false))
      return Error{errors::kStaleEpoch, "this share's epoch is over (" + message + ")"};
    return Error{"ControlPlaneRefused", "the control plane refused " + what + " (HTTP " +
                                            std::to_string(answer.status) + "): " + message};
  }

  ShareLaunchEnv env_;
  std::unique_ptr<HttpClient> client_;
  int workers_ = 1;
  std::deque<Assignment> local_;                        // leased, not yet handed to a worker
  std::map<std::uint64_t, Clock::time_point> started_;  // handed to a worker, by ticket
  std::vector<Pending> pending_;                        // outcomes not yet sent
  std::uint64_t pending_bytes_ = 0;
  std::size_t pending_text_ = 0;
  Result<void> deferred_ = ok();  // an exchange report() had to make, and its failure
  TryError first_init_error_;
  double average_try_ = -1;  // seconds, a moving average; -1 before the first
  Clock::time_point last_exchange_{};
  int init_failures_ = 0;
  std::string leaving_;
  TryError leaving_error_;
  RunVerdict verdict_ = RunVerdict::Running;
  std::string failure_;
  std::optional<TryError> first_error_;
  parallel::Progress progress_;
};

}  // namespace

parallel::QueueFactory control_plane_queue_factory(ShareLaunchEnv env,
                                                   std::unique_ptr<HttpClient> client) {
  auto shared_client = std::make_shared<std::unique_ptr<HttpClient>>(std::move(client));
  return [env = std::move(env), shared_client](
             const parallel::QueuePlan& plan) -> Result<std::unique_ptr<parallel::MiniBatchQueue>> {
    auto queue = std::make_unique<ControlPlaneQueue>(env, std::move(*shared_client), plan);
    if (auto opened = queue->open(plan); !opened.ok()) return opened.error();
    return std::unique_ptr<parallel::MiniBatchQueue>(std::move(queue));
  };
}

parallel::QueueFactory control_plane_queue_factory(const ShareLaunchEnv& env) {
  auto endpoint = parse_http_url(env.url);
  if (!endpoint.ok()) {
    return [error = endpoint.error()](
               const parallel::QueuePlan&) -> Result<std::unique_ptr<parallel::MiniBatchQueue>> {
      return error;
    };
  }
  HttpTlsOptions tls;
  if (!env.ca_file.empty()) tls.ca_file = env.ca_file;
  return control_plane_queue_factory(env, make_http_client(*endpoint, tls, 1));
}

int run_parallel_node_from_env(const char* program) {
  const char* text = std::getenv("AMLNODE_PRS_SPEC");
  auto spec = parallel::read_node_spec(text ? text : "");
  if (!spec.ok()) {
    std::fprintf(stderr, "%s: %s (only a ParallelRunStep's run runs this)\n", program,
                 spec.error().message.c_str());
    return 2;
  }
  auto share = read_share_launch_env();
  if (!share.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, share.error().message.c_str());
    return 2;
  }
  // A share of a run across nodes takes its mini-batches from the control plane.
  if (*share) return parallel::run_parallel_node(*spec, control_plane_queue_factory(**share));
  return parallel::run_parallel_node(*spec);
}

}  // namespace amlnode::agent
