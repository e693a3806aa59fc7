#include "parallel/node_driver.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>

#include "common/hash.h"

namespace amlnode::parallel {
namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kMaxWorkerLine = 4 << 20;  // one answer; longer means a broken worker
constexpr auto kProgressInterval = std::chrono::seconds(1);
constexpr auto kWorkerExitGrace = std::chrono::seconds(10);
constexpr auto kEndGrace = std::chrono::seconds(2);
constexpr std::size_t kMaxErrorBytes = 32 << 10;  // error.json is read back bounded

Error invalid(const std::string& what) {
  return Error{"InvalidJob", what};
}

std::string kind_name(InputKind kind) {
  return kind == InputKind::Files ? "files" : "table";
}

TryOutcome failure(const Assignment& assignment, std::string why) {
  TryOutcome outcome;
  outcome.assignment = assignment;
  outcome.error = TryError{std::move(why), ""};
  return outcome;
}

// processNNN, as Azure ML names a node's worker processes.
std::string process_name(int index) {
  char name[32];
  std::snprintf(name, sizeof name, "process%03d", index + 1);
  return name;
}

struct Worker {
  int index = 0;
  pid_t pid = -1;
  int to = -1;    // the worker's requests pipe
  int from = -1;  // its answers pipe
  // Readable once the process has ended (pidfd_open; -1 where the kernel has none), so its end
  // is seen even when a child it forked keeps its answers pipe open.
  int pidfd = -1;
  std::string buffer;
  bool ready = false;
  std::optional<Assignment> busy;
  bool dying = false;  // killed (a timeout): takes nothing more, replaced once its end is read
  Clock::time_point spawned;
  Clock::time_point started_try;
  std::optional<TryError> init_error;
};

class NodeDriver {
 public:
  NodeDriver(const NodeSpec& spec, std::vector<MiniBatch> batches,
             std::unique_ptr<MiniBatchQueue> queue)
      : spec_(spec), batches_(std::move(batches)), queue_(std::move(queue)) {}

  int run();

 private:
  bool start_worker(Worker& worker);
  void stop_worker(Worker& worker, int signal);
  void assign(Worker& worker);
  void read_from(Worker& worker);
  void handle_line(Worker& worker, const std::string& line);
  // Handles every whole line of the worker's buffer.
  void handle_lines(Worker& worker);
  void wait_for_end(Worker& worker, Clock::time_point deadline);
  // The worker is gone: `reaped` is its wait status when already collected.
  void worker_ended(Worker& worker, std::optional<int> reaped = std::nullopt);
  // Notices workers that ended while something else keeps their answers pipe open.
  void reap_exited();
  void check_timeouts();
  void write_progress(bool force);
  void record(const Assignment& assignment, const char* status, std::int64_t items,
              std::int64_t rows);
  void fail_node(const std::string& why);
  void stop_workers();
  bool any_busy() const;
  int free_workers() const;
  bool poll_workers();
  std::filesystem::path rows_file(const Assignment& assignment) const {
    return spec_.state_dir / "rows" /
           (std::to_string(assignment.mini_batch) + "." + std::to_string(assignment.ticket) +
            ".txt");
  }
  // After this node stopped taking mini-batches: waits for the other nodes to end the run.
  void wait_for_verdict();
  int finish();
  bool assemble_output();

  const NodeSpec& spec_;
  std::vector<MiniBatch> batches_;
  std::unique_ptr<MiniBatchQueue> queue_;
  std::vector<Worker> workers_;
  int init_failures_ = 0;
  std::optional<TryError> first_init_error_;
  std::string node_failure_;  // this node cannot go on (its error is the run's)
  std::string leaving_;       // this node takes no more mini-batches; the run may go on elsewhere
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_progress_{};
  std::FILE* report_ = nullptr;  // processed_mini-batches.csv
};

bool NodeDriver::start_worker(Worker& worker) {
  int requests[2];
  int answers[2];
  if (::pipe2(requests, O_CLOEXEC) != 0) return false;
  if (::pipe2(answers, O_CLOEXEC) != 0) {
    ::close(requests[0]);
    ::close(requests[1]);
    return false;
  }
  std::string name = process_name(worker.index);
  auto out_dir = spec_.logs_dir / "user" / "stdout" / "0";
  auto err_dir = spec_.logs_dir / "user" / "stderr" / "0";
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  fs::create_directories(err_dir, ec);
  json settings = {
      {"entry_script", spec_.entry_script.string()},
      {"arguments", spec_.arguments},
      {"rows_dir", (spec_.state_dir / "rows").string()},
      {"kind", kind_name(spec_.inputs.empty() ? InputKind::Files : spec_.inputs.front().kind)},
      {"format", spec_.inputs.empty() ? "delimited" : spec_.inputs.front().format},
      {"separator", spec_.inputs.empty() ? "," : spec_.inputs.front().separator},
      {"header", spec_.inputs.empty() || spec_.inputs.front().header},
      {"append_rows", spec_.append_rows}};
  std::string settings_text = settings.dump();
  std::string out_log = (out_dir / (name + ".stdout.txt")).string();
  std::string err_log = (err_dir / (name + ".stderr.txt")).string();
  pid_t pid = ::fork();
  if (pid == 0) {
    // The child: its request pipe is fd 3, its answer pipe fd 4; stdout and stderr its logs.
    // Moved above 4 first: a pipe that already is fd 3 or 4 would keep its close-on-exec flag
    // through dup2 onto itself, or be overwritten by the other's dup2. Every other worker's
    // pipes are close-on-exec, so none leaks into this one.
    int in = ::fcntl(requests[0], F_DUPFD_CLOEXEC, 10);
    int answer = ::fcntl(answers[1], F_DUPFD_CLOEXEC, 10);
    ::dup2(in, 3);
    ::dup2(answer, 4);
    int out = ::open(out_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0644);
    int err = ::open(err_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0644);
    if (out >= 0) ::dup2(out, 1);
    if (err >= 0) ::dup2(err, 2);
    if (out > 2) ::close(out);
    if (err > 2) ::close(err);
    ::close(in);
    ::close(answer);
    ::signal(SIGPIPE, SIG_DFL);  // the driver ignores it; the entry script must not
    // Nothing else of the driver's reaches the entry script (a connection to the control plane
    // is not close-on-exec): every descriptor above the two pipes is closed.
    if (::syscall(SYS_close_range, 5U, ~0U, 0U) != 0) {
      for (int fd = 5; fd < 1024; ++fd) ::close(fd);
    }
    ::setenv("AMLNODE_PRS_IN", "3", 1);
    ::setenv("AMLNODE_PRS_OUT", "4", 1);
    ::setenv("AMLNODE_PRS_WORKER", settings_text.c_str(), 1);
    ::setenv("AMLNODE_PRS_PROCESS_NAME", name.c_str(), 1);
    ::setenv("AMLNODE_PRS_LOGGING_LEVEL", spec_.logging_level.c_str(), 1);
    ::execlp(spec_.python.c_str(), spec_.python.c_str(), "-m", "amlnode_parallel.worker",
             static_cast<char*>(nullptr));
    std::fprintf(stderr, "amlnode parallel-node: cannot start %s: %s\n", spec_.python.c_str(),
                 std::strerror(errno));
    ::_exit(127);
  }
  ::close(requests[0]);
  ::close(answers[1]);
  if (pid < 0) {
    ::close(requests[1]);
    ::close(answers[0]);
    return false;
  }
  worker.pid = pid;
  worker.pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  worker.to = requests[1];
  worker.from = answers[0];
  worker.buffer.clear();
  worker.ready = false;
  worker.dying = false;
  worker.spawned = Clock::now();
  worker.busy.reset();
  worker.init_error.reset();
  return true;
}

void NodeDriver::stop_worker(Worker& worker, int signal) {
  if (worker.pid > 0) ::kill(worker.pid, signal);
}

void NodeDriver::assign(Worker& worker) {
  auto next = queue_->next();
  if (!next) return;
  const MiniBatch& batch = batches_[next->mini_batch];
  json request = {{"id", next->ticket}, {"mini_batch", next->mini_batch}};
  bool table = !spec_.inputs.empty() && spec_.inputs.front().kind == InputKind::Table;
  if (table && batch.slice) {
    request["table"] = {{"file", batch.slice->file.string()},
                        {"header_end", batch.slice->header_end},
                        {"begin", batch.slice->begin},
                        {"end", batch.slice->end}};
  } else if (table) {
    // A table by partition keys: whole files, each with its placeholders' values as columns.
    json files = json::array();
    for (std::size_t i = 0; i < batch.files.size(); ++i) {
      json columns = json::array();
      if (i < batch.file_columns.size())
        for (const auto& [name, value] : batch.file_columns[i]) columns.push_back({name, value});
      files.push_back({{"file", batch.files[i].string()}, {"columns", columns}});
    }
    request["table_files"] = files;
  } else {
    json files = json::array();
    for (const auto& file : batch.files) files.push_back(file.string());
    request["files"] = files;
  }
  if (!batch.partition.empty()) {
    // [key, value] pairs: partition_keys' order is the dict's (a JSON object's would be sorted).
    json values = json::array();
    for (const auto& [key, value] : batch.partition) values.push_back({key, value});
    request["partition"] = values;
  }
  // A file name that is not UTF-8 is sent with U+FFFD in it (its try then fails to open it)
  // rather than ending the driver.
  std::string line = request.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  worker.busy = next;
  worker.started_try = Clock::now();
  // A worker that is gone is noticed when its answers pipe ends; the try then fails there.
  std::size_t at = 0;
  while (at < line.size()) {
    ssize_t n = ::write(worker.to, line.data() + at, line.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    at += static_cast<std::size_t>(n);
  }
}

void NodeDriver::handle_lines(Worker& worker) {
  std::size_t newline;
  while ((newline = worker.buffer.find('\n')) != std::string::npos) {
    std::string line = worker.buffer.substr(0, newline);
    worker.buffer.erase(0, newline + 1);
    handle_line(worker, line);
  }
}

void NodeDriver::read_from(Worker& worker) {
  char chunk[64 * 1024];
  ssize_t n = ::read(worker.from, chunk, sizeof chunk);
  if (n < 0 && errno == EINTR) return;
  if (n <= 0) return worker_ended(worker);
  worker.buffer.append(chunk, static_cast<std::size_t>(n));
  handle_lines(worker);
  if (worker.buffer.size() > kMaxWorkerLine) {
    stop_worker(worker, SIGKILL);  // a broken worker: its end fails what it held
    worker.buffer.clear();
  }
}

void NodeDriver::handle_line(Worker& worker, const std::string& line) {
  json message = json::parse(line, nullptr, false);
  if (!message.is_object()) return;
  if (message.value("ready", false)) {
    worker.ready = true;
    return;
  }
  if (auto failed = message.find("init_failed"); failed != message.end() && failed->is_object()) {
    worker.init_error = TryError{failed->value("message", ""), failed->value("traceback", "")};
    return;
  }
  if (!worker.busy || message.value("id", std::uint64_t{0}) != worker.busy->ticket) return;
  Assignment assignment = *worker.busy;
  worker.busy.reset();
  std::int64_t items = message.value("items", std::int64_t{0});
  std::int64_t rows = message.value("rows", std::int64_t{0});
  TryOutcome outcome;
  outcome.assignment = assignment;
  outcome.ok = message.value("ok", false);
  outcome.items = items;
  outcome.rows = rows;
  if (outcome.ok) {
    outcome.rows_file = rows_file(assignment);
    if (queue_->report(std::move(outcome))) record(assignment, "succeeded", items, rows);
  } else {
    outcome.error = {message.value("message", "run() failed"), message.value("traceback", "")};
    if (queue_->report(std::move(outcome))) record(assignment, "failed", items, 0);
  }
}

// Waits until the worker's process has ended (its pidfd; without one, its answers pipe closing),
// and SIGKILLs it at `deadline`. Its answers are read and dropped meanwhile.
void NodeDriver::wait_for_end(Worker& worker, Clock::time_point deadline) {
  char chunk[4096];
  bool pipe_open = true;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd fds[2] = {{worker.pidfd, POLLIN, 0}, {pipe_open ? worker.from : -1, POLLIN, 0}};
    if (worker.pidfd < 0 && !pipe_open) return;  // the pipe closed: as near as it can tell
    if (left.count() <= 0 || ::poll(fds, 2, static_cast<int>(left.count())) == 0) {
      stop_worker(worker, SIGKILL);
      return;
    }
    if (fds[0].revents & POLLIN) return;
    if ((fds[1].revents & (POLLIN | POLLHUP)) && ::read(worker.from, chunk, sizeof chunk) <= 0)
      pipe_open = false;
  }
}

void NodeDriver::reap_exited() {
  for (auto& worker : workers_) {
    if (worker.pid <= 0) continue;
    int status = 0;
    if (::waitpid(worker.pid, &status, WNOHANG) != worker.pid) continue;
    // Gone, though its answers pipe may still be open (a child it forked holds it): what it
    // wrote before it ended is read first, bounded, since that child could go on writing.
    char chunk[64 * 1024];
    pollfd fd{worker.from, POLLIN, 0};
    while (worker.buffer.size() <= kMaxWorkerLine && ::poll(&fd, 1, 0) > 0 &&
           (fd.revents & POLLIN)) {
      ssize_t n = ::read(worker.from, chunk, sizeof chunk);
      if (n <= 0) break;
      worker.buffer.append(chunk, static_cast<std::size_t>(n));
    }
    handle_lines(worker);
    worker_ended(worker, status);
  }
}

void NodeDriver::worker_ended(Worker& worker, std::optional<int> reaped) {
  int status = reaped.value_or(0);
  // Its answers pipe ended: the worker is exiting (Python closes it at shutdown), or closed it and
  // lives on, of no use then. It gets a moment to end by itself, then SIGKILL, so that it never
  // holds the driver in waitpid.
  if (!reaped) wait_for_end(worker, Clock::now() + kEndGrace);
  while (!reaped && ::waitpid(worker.pid, &status, 0) < 0 && errno == EINTR) {
  }
  ::close(worker.to);
  ::close(worker.from);
  if (worker.pidfd >= 0) ::close(worker.pidfd);
  worker.to = worker.from = worker.pidfd = -1;
  worker.pid = -1;
  std::string how = WIFSIGNALED(status) ? "was killed by signal " + std::to_string(WTERMSIG(status))
                                        : "exited with " + std::to_string(WEXITSTATUS(status));
  if (worker.busy) {
    Assignment assignment = *worker.busy;
    worker.busy.reset();
    if (queue_->report(failure(assignment, "the worker running it " + how)))
      record(assignment, "failed", 0, 0);
  }
  if (!worker.ready) {
    // Killed for a timeout before it was ready is only the init deadline: counted the same.
    init_failures_ += 1;
    if (!first_init_error_)
      first_init_error_ = worker.init_error.value_or(TryError{"the worker " + how, ""});
    queue_->count_init_failure(worker.init_error.value_or(TryError{"the worker " + how, ""}));
    // Azure ML's rule: a node whose workers fail init() 3 x process_count_per_node times stops.
    if (init_failures_ >= 3 * spec_.workers) {
      if (leaving_.empty())
        leaving_ = "init() failed " + std::to_string(init_failures_) +
                   " times on this node (3 x process_count_per_node)";
      return;
    }
  }
  if (queue_->verdict() == RunVerdict::Running && node_failure_.empty() && leaving_.empty())
    start_worker(worker);
}

void NodeDriver::check_timeouts() {
  auto limit = std::chrono::seconds(spec_.run_invocation_timeout);
  // A worker still in init() after 3 x run_invocation_timeout + 30 s (Azure ML's limit) is
  // killed; its end counts as an init() failure.
  auto init_limit = 3 * limit + std::chrono::seconds(30);
  for (auto& worker : workers_) {
    if (worker.pid > 0 && !worker.ready && !worker.dying &&
        Clock::now() - worker.spawned >= init_limit) {
      worker.init_error = TryError{
          "init() did not return within 3 x run_invocation_timeout + "
          "30 s; its worker was killed",
          ""};
      worker.dying = true;
      stop_worker(worker, SIGKILL);
    }
  }
  for (auto& worker : workers_) {
    if (!worker.busy || Clock::now() - worker.started_try < limit) continue;
    Assignment assignment = *worker.busy;
    worker.busy.reset();
    worker.dying = true;
    stop_worker(worker, SIGKILL);  // replaced once its end is read
    if (queue_->report(failure(assignment, "run() took longer than run_invocation_timeout (" +
                                               std::to_string(spec_.run_invocation_timeout) +
                                               " s); its worker was killed")))
      record(assignment, "timed out", 0, 0);
  }
}

void NodeDriver::record(const Assignment& assignment, const char* status, std::int64_t items,
                        std::int64_t rows) {
  if (!report_) return;
  double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  std::fprintf(report_, "%d,%d,%s,%lld,%lld,%.3f\n", assignment.mini_batch, assignment.attempt,
               status, static_cast<long long>(items), static_cast<long long>(rows), seconds);
}

void NodeDriver::write_progress(bool force) {
  auto now = Clock::now();
  if (!force && now - last_progress_ < kProgressInterval) return;
  last_progress_ = now;
  Progress p = queue_->progress();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double rate = elapsed > 0 ? p.processed / elapsed : 0;
  int left = p.total - p.processed - p.failed;
  std::time_t wall = std::time(nullptr);
  std::tm utc{};
  ::gmtime_r(&wall, &utc);
  char hour[16];
  char stamp[32];
  std::strftime(hour, sizeof hour, "%Y%m%d%H", &utc);
  std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &utc);
  auto file = spec_.logs_dir / ("job_progress_overview." + std::string(hour) + ".txt");
  if (std::FILE* out = std::fopen(file.c_str(), "a")) {
    std::fprintf(out,
                 "%s total %d mini-batches, scheduled %d, processed %d, failed %d, in progress "
                 "%d, %.1f mini-batches/s, ETA %.0f s\n",
                 stamp, p.total, p.scheduled, p.processed, p.failed, p.in_flight, rate,
                 rate > 0 ? left / rate : 0.0);
    std::fclose(out);
  }
}

void NodeDriver::fail_node(const std::string& why) {
  if (node_failure_.empty()) node_failure_ = why;
}

bool NodeDriver::assemble_output() {
  if (!spec_.append_rows || !queue_->writes_output()) return true;
  std::error_code ec;
  fs::create_directories(spec_.outputs_dir, ec);
  auto target = spec_.outputs_dir / spec_.append_row_file_name;
  auto temporary = target;
  temporary += ".tmp";
  if (auto written = queue_->write_output(temporary); !written.ok()) {
    std::fprintf(stderr, "amlnode parallel-node: %s\n", written.error().message.c_str());
    return false;
  }
  fs::rename(temporary, target, ec);
  return !ec;
}

void NodeDriver::stop_workers() {
  for (auto& worker : workers_) {
    if (worker.pid <= 0) continue;
    ::close(worker.to);  // a worker reading its next request ends
    worker.to = -1;
    if (queue_->verdict() == RunVerdict::Failed || !node_failure_.empty() || !leaving_.empty())
      stop_worker(worker, SIGKILL);
  }
  // Workers end when their requests pipe closes; one that does not (a thread of its own that
  // never stops) is killed after kWorkerExitGrace. Their answers pipes say when they are gone.
  auto give_up = Clock::now() + kWorkerExitGrace;
  for (auto& worker : workers_) {
    if (worker.pid <= 0) continue;
    wait_for_end(worker, give_up);
    int status = 0;
    while (::waitpid(worker.pid, &status, 0) < 0 && errno == EINTR) {
    }
    ::close(worker.from);
    if (worker.pidfd >= 0) ::close(worker.pidfd);
    worker.pid = -1;
  }
}

void NodeDriver::wait_for_verdict() {
  if (auto left = queue_->leave(leaving_, first_init_error_.value_or(TryError{leaving_, ""}));
      !left.ok())
    return fail_node(left.error().message);
  while (queue_->verdict() == RunVerdict::Running) {
    if (auto synced = queue_->sync(0, true); !synced.ok()) return fail_node(synced.error().message);
    write_progress(false);
  }
}

int NodeDriver::finish() {
  stop_workers();
  if (!leaving_.empty() && node_failure_.empty()) wait_for_verdict();
  if (report_) std::fclose(report_);
  write_progress(true);
  Progress p = queue_->progress();
  bool completed = queue_->verdict() == RunVerdict::Completed && node_failure_.empty();
  std::string error;
  if (completed && !assemble_output()) error = "the output file could not be written";
  if (!completed) {
    auto first = node_failure_.empty() ? queue_->first_error() : first_init_error_;
    error = node_failure_.empty() ? queue_->failure() : node_failure_;
    if (first) error += "; the first error: " + first->message;
    if (first && !first->traceback.empty()) error += "\n" + first->traceback;
  }
  if (std::FILE* out = std::fopen((spec_.logs_dir / "job_result.txt").c_str(), "w")) {
    std::fprintf(out,
                 "%s\n%d mini-batches: %d processed, %d failed; %lld rows, %lld failed items\n",
                 error.empty() ? "Completed" : "Failed", p.total, p.processed, p.failed,
                 static_cast<long long>(p.rows), static_cast<long long>(p.failed_items));
    if (!error.empty()) std::fprintf(out, "%s\n", error.c_str());
    std::fclose(out);
  }
  std::printf("amlnode parallel-node: %s: %d of %d mini-batches processed, %d failed\n",
              error.empty() ? "Completed" : "Failed", p.processed, p.total, p.failed);
  if (error.empty()) return 0;
  if (error.size() > kMaxErrorBytes) error = error.substr(0, kMaxErrorBytes) + "\n[cut]";
  std::ofstream(spec_.state_dir / "error.json")
      << json{{"message", error}}.dump(-1, ' ', false, json::error_handler_t::replace);
  std::fprintf(stderr, "%s\n", error.c_str());
  return 1;
}

int NodeDriver::free_workers() const {
  int free = 0;
  for (const auto& worker : workers_)
    free += worker.pid > 0 && worker.ready && !worker.busy && !worker.dying ? 1 : 0;
  return free;
}

bool NodeDriver::any_busy() const {
  for (const auto& worker : workers_)
    if (worker.busy) return true;
  return false;
}

int NodeDriver::run() {
  std::error_code ec;
  fs::create_directories(spec_.state_dir / "rows", ec);
  fs::create_directories(spec_.logs_dir / "sys" / "job_report", ec);
  report_ = std::fopen(
      (spec_.logs_dir / "sys" / "job_report" / "processed_mini-batches.csv").c_str(), "w");
  if (report_) std::fprintf(report_, "mini_batch,try,status,items,rows,seconds\n");
  std::printf("amlnode parallel-node: %zu mini-batches, %d workers\n", batches_.size(),
              spec_.workers);
  std::fflush(stdout);
  workers_.resize(spec_.workers);
  for (int i = 0; i < spec_.workers; ++i) {
    workers_[i].index = i;
    if (!start_worker(workers_[i])) fail_node("a worker process could not be started");
  }
  while (node_failure_.empty() && leaving_.empty()) {
    if (auto synced = queue_->sync(free_workers(), !any_busy()); !synced.ok()) {
      fail_node(synced.error().message);
      break;
    }
    if (queue_->verdict() == RunVerdict::Failed) break;
    for (auto& worker : workers_)
      if (worker.pid > 0 && worker.ready && !worker.dying && !worker.busy) assign(worker);
    if (queue_->verdict() == RunVerdict::Completed && !any_busy()) break;
    if (!poll_workers()) break;
    reap_exited();
    check_timeouts();
    write_progress(false);
  }
  return finish();
}

// Waits for the workers' answers and ends, up to the nearest try's deadline and at most 1 s (for
// progress). Returns false when this node cannot go on.
bool NodeDriver::poll_workers() {
  std::vector<pollfd> fds;
  std::vector<Worker*> polled;
  for (auto& worker : workers_) {
    if (worker.pid <= 0) continue;
    fds.push_back({worker.from, POLLIN, 0});
    polled.push_back(&worker);
  }
  std::size_t answer_fds = fds.size();
  for (auto& worker : workers_)
    if (worker.pid > 0 && worker.pidfd >= 0) fds.push_back({worker.pidfd, POLLIN, 0});
  if (fds.empty()) {
    fail_node("no worker is left to run the mini-batches");
    return false;
  }
  auto wait = std::chrono::milliseconds(1000);
  for (const auto& worker : workers_) {
    if (!worker.busy) continue;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        worker.started_try + std::chrono::seconds(spec_.run_invocation_timeout) - Clock::now());
    wait = std::max(std::chrono::milliseconds(0), std::min(wait, left));
  }
  // Free workers with nothing to take here: the queue has to be asked again soon (it may have
  // more once a retry comes back), so the wait is short.
  bool waiting_for_work = false;
  for (const auto& worker : workers_)
    waiting_for_work =
        waiting_for_work || (worker.pid > 0 && worker.ready && !worker.busy && !worker.dying);
  if (waiting_for_work && any_busy()) wait = std::min(wait, std::chrono::milliseconds(50));
  // None busy and none to take: the queue's sync has just waited for the run's end already.
  if (waiting_for_work && !any_busy()) wait = std::chrono::milliseconds(0);
  int ready = ::poll(fds.data(), fds.size(), static_cast<int>(wait.count()));
  if (ready < 0 && errno != EINTR) {
    fail_node(std::string("waiting for the workers failed: ") + std::strerror(errno));
    return false;
  }
  for (std::size_t i = 0; i < answer_fds; ++i) {
    if (polled[i]->pid > 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
      read_from(*polled[i]);
  }
  return true;
}

}  // namespace

Result<std::vector<MiniBatch>> node_mini_batches(const NodeSpec& spec) {
  std::vector<fs::path> files;
  for (const auto& input : spec.inputs) {
    auto found = input_files(input.path);
    if (!found.ok()) return found.error();
    files.insert(files.end(), found->begin(), found->end());
  }
  InputKind kind = spec.inputs.empty() ? InputKind::Files : spec.inputs.front().kind;
  if (!spec.partition_keys.empty()) {
    auto batches = split_by_partition(files, spec.partition_format, spec.partition_keys);
    if (!batches.ok() || kind == InputKind::Files) return batches;
    for (auto& batch : *batches) batch.items = 0;  // a table's rows, counted when read
    return batches;
  }
  if (kind == InputKind::Files) {
    std::uint64_t per_batch = kDefaultFilesPerBatch;
    if (spec.mini_batch_size) {
      auto size = parse_mini_batch_size(*spec.mini_batch_size, kind);
      if (!size.ok()) return size.error();
      per_batch = *size;
    }
    return split_files(files, per_batch);
  }
  std::uint64_t bytes = kDefaultBatchBytes;
  if (spec.mini_batch_size) {
    auto size = parse_mini_batch_size(*spec.mini_batch_size, kind);
    if (!size.ok()) return size.error();
    bytes = *size;
  }
  const auto& first = spec.inputs.front();
  return split_table(files, bytes,
                     {first.header && first.format == "delimited", first.format != "parquet"});
}

json node_spec_json(const NodeSpec& spec) {
  json inputs = json::array();
  for (const auto& input : spec.inputs)
    inputs.push_back({{"name", input.name},
                      {"path", input.path.string()},
                      {"kind", kind_name(input.kind)},
                      {"format", input.format},
                      {"separator", input.separator},
                      {"header", input.header}});
  json out = {{"python", spec.python},
              {"entry_script", spec.entry_script.string()},
              {"arguments", spec.arguments},
              {"workers", spec.workers},
              {"inputs", inputs},
              {"run_max_try", spec.rules.run_max_try},
              {"error_threshold", spec.rules.error_threshold},
              {"allowed_failed_count", spec.rules.allowed_failed_count},
              {"allowed_failed_percent", spec.rules.allowed_failed_percent},
              {"run_invocation_timeout", spec.run_invocation_timeout},
              {"append_rows", spec.append_rows},
              {"append_row_file_name", spec.append_row_file_name},
              {"logging_level", spec.logging_level},
              {"outputs_dir", spec.outputs_dir.string()},
              {"logs_dir", spec.logs_dir.string()},
              {"state_dir", spec.state_dir.string()}};
  if (spec.mini_batch_size) out["mini_batch_size"] = *spec.mini_batch_size;
  if (!spec.partition_keys.empty()) {
    out["partition_keys"] = spec.partition_keys;
    out["partition_format"] = spec.partition_format;
  }
  return out;
}

Result<NodeSpec> read_node_spec(const std::string& text) {
  json in = json::parse(text, nullptr, false);
  if (!in.is_object()) return invalid("AMLNODE_PRS_SPEC: not a JSON object");
  try {
    NodeSpec spec;
    spec.python = in.at("python").get<std::string>();
    spec.entry_script = in.at("entry_script").get<std::string>();
    spec.arguments = in.at("arguments").get<std::vector<std::string>>();
    spec.workers = in.at("workers").get<int>();
    for (const auto& input : in.at("inputs")) {
      NodeInput node_input;
      node_input.name = input.at("name").get<std::string>();
      node_input.path = input.at("path").get<std::string>();
      node_input.kind =
          input.at("kind").get<std::string>() == "table" ? InputKind::Table : InputKind::Files;
      node_input.format = input.at("format").get<std::string>();
      node_input.separator = input.at("separator").get<std::string>();
      node_input.header = input.at("header").get<bool>();
      spec.inputs.push_back(std::move(node_input));
    }
    if (in.contains("mini_batch_size"))
      spec.mini_batch_size = in["mini_batch_size"].get<std::string>();
    if (in.contains("partition_keys")) {
      spec.partition_keys = in["partition_keys"].get<std::vector<std::string>>();
      spec.partition_format = in.at("partition_format").get<std::string>();
    }
    spec.rules.run_max_try = in.at("run_max_try").get<int>();
    spec.rules.error_threshold = in.at("error_threshold").get<std::int64_t>();
    spec.rules.allowed_failed_count = in.at("allowed_failed_count").get<std::int64_t>();
    spec.rules.allowed_failed_percent = in.at("allowed_failed_percent").get<double>();
    spec.run_invocation_timeout = in.at("run_invocation_timeout").get<std::int64_t>();
    spec.append_rows = in.at("append_rows").get<bool>();
    spec.rules.count_missing_rows = spec.append_rows;
    spec.append_row_file_name = in.at("append_row_file_name").get<std::string>();
    spec.logging_level = in.value("logging_level", std::string("INFO"));
    spec.outputs_dir = in.at("outputs_dir").get<std::string>();
    spec.logs_dir = in.at("logs_dir").get<std::string>();
    spec.state_dir = in.at("state_dir").get<std::string>();
    if (spec.workers < 1 || spec.workers > 1024)
      return invalid("AMLNODE_PRS_SPEC: workers out of range");
    return spec;
  } catch (const json::exception& e) {
    return invalid(std::string("AMLNODE_PRS_SPEC: ") + e.what());
  }
}

namespace {

// A file as every node names it: relative to the input it was found in.
std::string portable_name(const NodeSpec& spec, const fs::path& file) {
  for (const auto& input : spec.inputs) {
    auto relative = file.lexically_relative(input.path);
    if (!relative.empty() && *relative.begin() != "..")
      return input.name + "/" + (relative == "." ? file.filename() : relative).string();
  }
  return file.filename().string();
}

}  // namespace

std::string mini_batch_digest(const NodeSpec& spec, const std::vector<MiniBatch>& batches) {
  std::string text;
  for (const auto& batch : batches) {
    text += "batch " + std::to_string(batch.items) + "\n";
    for (const auto& file : batch.files) text += portable_name(spec, file) + "\n";
    if (batch.slice) {
      text += portable_name(spec, batch.slice->file) + " " + std::to_string(batch.slice->begin) +
              " " + std::to_string(batch.slice->end) + "\n";
    }
    for (const auto& [key, value] : batch.partition) text += key + "=" + value + "\n";
  }
  return sha256_hex(text);
}

int run_parallel_node(const NodeSpec& spec, const QueueFactory& make_queue) {
  auto fail = [&](const std::string& message) {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::error_code ec;
    fs::create_directories(spec.state_dir, ec);
    std::ofstream(spec.state_dir / "error.json")
        << json{{"message", message}}.dump(-1, ' ', false, json::error_handler_t::replace);
    return 1;
  };
  auto batches = node_mini_batches(spec);
  if (!batches.ok()) return fail(batches.error().message);
  QueuePlan plan;
  for (const auto& batch : *batches) plan.items.push_back(batch.items);
  plan.digest = mini_batch_digest(spec, *batches);
  plan.rules = spec.rules;
  plan.workers = spec.workers;
  auto queue = make_queue ? make_queue(plan)
                          : Result<std::unique_ptr<MiniBatchQueue>>(make_local_queue(plan));
  if (!queue.ok()) return fail(queue.error().message);
  ::signal(SIGPIPE, SIG_IGN);
  NodeDriver driver(spec, std::move(*batches), std::move(*queue));
  return driver.run();
}

}  // namespace amlnode::parallel
