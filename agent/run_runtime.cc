#include "agent/run_runtime.h"

#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cerrno>

#include "agent/container_run.h"
#include "common/fs.h"
#include "executors/environments/config.h"

namespace amlnode::agent {
namespace {

using executors::ExitRecord;
using executors::Plan;

// The run's ranks under its one shim, on this host.
class HostRunRuntime final : public RunRuntime {
 public:
  HostRunRuntime(const Plan& plan, RunRuntimeContext context)
      : plan_(plan), context_(std::move(context)), log_(plan.run_dir, context_.clock) {}

  // Found again after a restart: its shim (alive or not), or none when only exit.json is left.
  HostRunRuntime(const Plan& plan, RunRuntimeContext context, FoundRun found)
      : HostRunRuntime(plan, std::move(context)) {
    shim_ = found.shim;
    shim_alive_ = found.shim && found.shim_alive;
    environment_ = std::move(found.environment);
  }

  Result<void> prepare(Plan& plan, const spec::Job&, Progress progress,
                       std::function<bool()> canceled) override {
    if (plan.python_environment) {
      auto environments = environment_config(context_.config, context_.state_dir);
      if (!environments.ok()) return environments.error();
      auto prepared = prepare_python_environment(plan, *environments, context_.clock, log_,
                                                 std::move(progress), std::move(canceled));
      if (!prepared.ok()) return prepared.error();
      // Held (the environment is not evicted) for as long as this runtime lives.
      environment_ = std::move(prepared.value());
    }
    plan_ = plan;
    return ok();
  }

  Result<void> launch() override {
    executors::LaunchSpec spec = shim_launch_spec(plan_);
    // The caller writes the terminal run.json synced right after reading exit.json.
    spec.caller_syncs_outcome = true;
    if (context_.before_launch) {
      if (auto marked = context_.before_launch(); !marked.ok()) return marked.error();
    }
    auto shim = context_.launcher->launch(spec, plan_.run_dir / "launch.json",
                                          plan_.run_dir / "system_logs" / "shim.txt");
    if (!shim.ok()) return shim.error();
    shim_ = *shim;
    shim_alive_ = true;
    log_.line("started: " + argv_text(plan_));
    return ok();
  }

  std::string describe() const override { return argv_text(plan_); }
  std::string_view prepares() const override { return "environment"; }

  void watch(boost::asio::io_context& loop, std::function<void()> on_exit) override {
    on_exit_ = std::move(on_exit);
    std::weak_ptr<bool> alive = alive_;
    if (!shim_alive_) {
      // It had ended before the agent came back: only its release is left.
      boost::asio::post(loop, [this, alive] {
        if (alive.lock()) on_exit_();
      });
      return;
    }
    int pidfd = executors::open_pidfd(shim_->pid);
    if (pidfd >= 0) {
      exit_watch_ = std::make_unique<boost::asio::posix::stream_descriptor>(loop, pidfd);
      exit_watch_->async_wait(boost::asio::posix::descriptor_base::wait_read,
                              [this, alive](const boost::system::error_code& ec) {
                                if (!ec && alive.lock()) ended();
                              });
      return;
    }
    // Kernels without pidfd: the shim (our child) is polled without being reaped.
    poll_ = std::make_unique<boost::asio::steady_timer>(loop);
    poll_exit();
  }

  void stop() override {
    if (!shim_) return;
    auto sent = executors::request_cancel(*shim_);
    if (!sent.ok()) log_.line(sent.error().message);
  }

  void kill() override {
    log_.line("the run did not stop within its grace period: killing its processes");
    // The cgroup walk blocks for a moment; the daemon's loop does not wait for it.
    run_blocking([run_dir = plan_.run_dir, log = log_] { end_run_processes(run_dir, log); });
  }

  Result<ExitRecord> release() override {
    std::string why = "the shim is gone";
    if (shim_) {
      // The shim is this process's child when this process started it; one found again after a
      // restart is not (ECHILD), and was reaped by whoever adopted it.
      int wait_status = 0;
      pid_t reaped;
      while ((reaped = ::waitpid(shim_->pid, &wait_status, 0)) < 0 && errno == EINTR) {
      }
      if (reaped == shim_->pid) why = "wait status " + std::to_string(wait_status);
    }
    end_run_processes(plan_.run_dir, log_);
    return read_exit_record(plan_.run_dir, why);
  }

  void abandon() override {
    detach();
    stop();
  }

  bool still_running() override {
    if (!shim_) return false;
    // A shim this agent started is its child: once it has exited it stays a zombie (with the same
    // pid and start time) until reaped, which happens here, since an abandoned run's exit is
    // watched no more. A shim found again after a restart is not our child (ECHILD).
    pid_t reaped = ::waitpid(shim_->pid, nullptr, WNOHANG);
    if (reaped == shim_->pid) return false;
    if (reaped == 0) return true;
    return executors::is_same_process(shim_->pid, shim_->start_time);
  }

  void detach() override {
    alive_ = std::make_shared<bool>(true);  // handlers already queued see the old token gone
    exit_watch_.reset();
    poll_.reset();
  }

  std::optional<metrics::RunRoot> sampled_root() const override {
    if (!shim_ || !shim_alive_) return std::nullopt;
    return metrics::RunRoot{shim_->pid, shim_->start_time, true};
  }
  std::optional<executors::LaunchedShim> shim() const override { return shim_; }

 private:
  void ended() {
    shim_alive_ = false;
    exit_watch_.reset();
    poll_.reset();
    on_exit_();
  }

  void poll_exit() {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(shim_->pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
        info.si_pid != 0) {
      ended();
      return;
    }
    poll_->expires_after(std::chrono::milliseconds(10));
    std::weak_ptr<bool> alive = alive_;
    poll_->async_wait([this, alive](const boost::system::error_code& ec) {
      if (!ec && alive.lock()) poll_exit();
    });
  }

  void run_blocking(std::function<void()> work) {
    if (context_.blocking) return context_.blocking(std::move(work));
    work();
  }

  Plan plan_;
  RunRuntimeContext context_;
  SystemLog log_;
  std::optional<executors::environments::PreparedEnvironment> environment_;
  std::optional<executors::LaunchedShim> shim_;
  bool shim_alive_ = false;
  std::function<void()> on_exit_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> exit_watch_;
  std::unique_ptr<boost::asio::steady_timer> poll_;
  // Handlers on the loop check it, so none reaches a runtime that was destroyed or detached.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// The run's ranks in one Docker container, supervised by ContainerWatch; its exit record is
// written to exit.json as the shim writes it for processes, so both kinds of run finish the same
// way.
class ContainerRunRuntime final : public RunRuntime {
 public:
  ContainerRunRuntime(const Plan& plan, RunRuntimeContext context)
      : plan_(plan),
        context_(std::move(context)),
        log_(plan.run_dir, context_.clock),
        docker_(context_.docker) {
    if (context_.docker_config) docker_config_ = *context_.docker_config;
    // Two threads: one waits for the container, one can stop it meanwhile.
    if (!context_.blocking) own_pool_ = std::make_unique<boost::asio::thread_pool>(2);
  }

  // Found again after a restart: its container, or none when it had ended and been released.
  ContainerRunRuntime(const Plan& plan, RunRuntimeContext context, FoundRun found)
      : ContainerRunRuntime(plan, std::move(context)) {
    container_ = std::move(found.container);
  }

  ~ContainerRunRuntime() override {
    alive_.reset();
    if (own_pool_) own_pool_->join();
  }

  Result<void> prepare(Plan& plan, const spec::Job& job, Progress progress,
                       std::function<bool()> canceled) override {
    if (context_.docker_refused) return *context_.docker_refused;
    if (!docker_) {
      auto config = docker_runtime_config(context_.config, context_.state_dir);
      if (!config.ok()) return config.error();
      auto runtime = docker::make_docker_runtime(*config);
      if (!runtime.ok()) return runtime.error();
      docker_ = std::shared_ptr<docker::ContainerRuntime>(std::move(runtime.value()));
      docker_config_ = *config;
    }
    auto spec = prepare_run_container(*docker_, docker_config_, context_.config, plan, job, log_,
                                      std::move(progress), std::move(canceled));
    if (!spec.ok()) return spec.error();
    spec_ = std::move(spec.value());
    plan_ = plan;
    return ok();
  }

  // The container is named amlnode-<run id>, so Docker itself refuses a second one; its id is
  // given to on_container_created before it starts (should storing it fail, its label still finds
  // it after a restart). A container that cannot start is removed again.
  Result<void> launch() override {
    if (auto written = write_container_launch(*spec_); !written.ok()) return written.error();
    if (context_.before_launch) {
      if (auto marked = context_.before_launch(); !marked.ok()) return marked.error();
    }
    auto id = docker_->create_container(*spec_);
    if (!id.ok()) return id.error();
    if (context_.on_container_created) context_.on_container_created(*id);
    if (auto started = docker_->start_container(*id); !started.ok()) {
      (void)docker_->remove_container(*id);
      return started.error();
    }
    log_.line("container " + *id + " started from " + spec_->image);
    container_ = inspected(*id);
    return ok();
  }

  std::string describe() const override { return image() + ": " + argv_text(plan_); }
  std::string_view prepares() const override { return "image"; }
  std::string image() const override {
    if (spec_) return spec_->image;
    return container_ ? container_->image : std::string();
  }

  void watch(boost::asio::io_context& loop, std::function<void()> on_exit) override {
    loop_ = &loop;
    on_exit_ = std::move(on_exit);
    std::weak_ptr<bool> alive = alive_;
    // Ended and released before the agent came back: exit.json says how.
    if (!container_) {
      boost::asio::post(loop, [this, alive] {
        if (alive.lock()) on_exit_();
      });
      return;
    }
    if (container_->state != "created") return begin_watch();
    // The agent stopped between creating the container and starting it: it starts now.
    run_blocking([this, alive, docker = docker_, id = container_->id, &loop] {
      auto started = docker->start_container(id);
      Result<docker::ContainerInfo> info = started.ok()
                                               ? docker->inspect_container(id)
                                               : Result<docker::ContainerInfo>(started.error());
      boost::asio::post(loop, [this, alive, info = std::move(info)] {
        if (!alive.lock() || detached_) return;
        if (!info.ok()) {
          lost_ = info.error();
          return on_exit_();
        }
        container_ = *info;
        begin_watch();
      });
    });
  }

  void stop() override {
    if (watch_) return watch_->stop(executors::ExitReason::Canceled);
    stop_pending_ = true;  // the watch, once it begins, carries it out
  }

  // Docker's own stop kills the container after the grace period; a second request changes
  // nothing, so there is nothing more to do here.
  void kill() override { stop(); }

  Result<ExitRecord> release() override {
    // A stop still in flight on the runtime's own threads posts back to the caller's loop, which
    // does not outlive this call.
    if (own_pool_) own_pool_->join();
    remove_run_containers(*docker_, plan_, log_);
    if (lost_) return *lost_;
    if (!record_) return read_exit_record(plan_.run_dir, "the container is gone");
    ExitRecord record = container_exit_record(plan_, *record_);
    auto written =
        write_file_atomically(plan_.run_dir / "exit.json", executors::exit_record_to_json(record));
    if (!written.ok()) log_.line(written.error().message);
    return record;
  }

  void abandon() override {
    detach();
    removing_->store(true);
    run_blocking([docker = docker_, plan = plan_, log = log_, removing = removing_] {
      remove_run_containers(*docker, plan, log);
      removing->store(false);
    });
  }

  bool still_running() override { return removing_->load(); }

  void detach() override {
    detached_ = true;
    if (watch_) watch_->abandon();
    watch_.reset();
  }

  std::optional<metrics::RunRoot> sampled_root() const override {
    if (!watch_ || !root_) return std::nullopt;
    return root_;
  }

 private:
  // Inspected right after it started: its first process (for metrics) and its start time (for
  // its deadline). Should the call fail, it is taken to have started now.
  docker::ContainerInfo inspected(const std::string& id) {
    auto info = docker_->inspect_container(id);
    if (info.ok()) return *info;
    docker::ContainerInfo started;
    started.id = id;
    started.state = "running";
    started.running = true;
    return started;
  }

  void begin_watch() {
    // Docker's pids are this host's (the daemon runs here), so the container's processes are
    // sampled like a shim's tree. Its start time keeps a reused pid from being taken for it.
    if (container_->running && container_->pid > 0) {
      if (auto start_time = executors::process_start_time(container_->pid))
        root_ = metrics::RunRoot{container_->pid, *start_time, false};
    }
    auto settings = container_watch_settings(plan_, *container_, *context_.clock,
                                             context_.wait_out_docker_outages);
    watch_ = std::make_shared<ContainerWatch>(
        loop_->get_executor(),
        [this](std::function<void()> work) { run_blocking(std::move(work)); }, docker_,
        container_->id, settings);
    std::weak_ptr<bool> alive = alive_;
    // The watch is let go inside its own callback: the callback's caller holds it meanwhile.
    watch_->start([this, alive](const ExitRecord& ended) {
      if (!alive.lock()) return;
      record_ = ended;
      watch_.reset();
      root_.reset();
      on_exit_();
    });
    if (stop_pending_ && watch_) watch_->stop(executors::ExitReason::Canceled);
  }

  void run_blocking(std::function<void()> work) {
    if (context_.blocking) return context_.blocking(std::move(work));
    boost::asio::post(*own_pool_, std::move(work));
  }

  Plan plan_;
  RunRuntimeContext context_;
  SystemLog log_;
  std::shared_ptr<docker::ContainerRuntime> docker_;
  docker::DockerRuntimeConfig docker_config_;
  std::optional<docker::ContainerSpec> spec_;
  std::optional<docker::ContainerInfo> container_;
  boost::asio::io_context* loop_ = nullptr;
  std::function<void()> on_exit_;
  std::shared_ptr<ContainerWatch> watch_;
  std::optional<metrics::RunRoot> root_;
  std::optional<ExitRecord> record_;
  std::optional<Error> lost_;  // a container found "created" that could not be started
  bool stop_pending_ = false;
  bool detached_ = false;
  std::shared_ptr<std::atomic<bool>> removing_ = std::make_shared<std::atomic<bool>>(false);
  std::unique_ptr<boost::asio::thread_pool> own_pool_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace

std::unique_ptr<RunRuntime> make_run_runtime(const Plan& plan, RunRuntimeContext context) {
  if (plan.environment_kind == executors::EnvironmentKind::Docker)
    return std::make_unique<ContainerRunRuntime>(plan, std::move(context));
  return std::make_unique<HostRunRuntime>(plan, std::move(context));
}

std::unique_ptr<RunRuntime> recover_run_runtime(const Plan& plan, RunRuntimeContext context,
                                                FoundRun found) {
  if (plan.environment_kind == executors::EnvironmentKind::Docker)
    return std::make_unique<ContainerRunRuntime>(plan, std::move(context), std::move(found));
  return std::make_unique<HostRunRuntime>(plan, std::move(context), std::move(found));
}

}  // namespace amlnode::agent
