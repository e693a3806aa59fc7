#include "agent/run_runtime.h"

#include <signal.h>
#include <sys/wait.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cerrno>
#include <cmath>

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
  explicit HostRunRuntime(RunRuntimeContext context) : context_(std::move(context)) {}

  Result<void> prepare(Plan& plan, const spec::Job&, Progress progress,
                       std::function<bool()> canceled) override {
    if (!plan.python_environment) return ok();
    auto environments = environment_config(context_.config, context_.state_dir);
    if (!environments.ok()) return environments.error();
    auto prepared = prepare_python_environment(plan, *environments, context_.clock, *context_.log,
                                               std::move(progress), std::move(canceled));
    if (!prepared.ok()) return prepared.error();
    // Held (the environment is not evicted) for as long as this runtime lives.
    environment_ = std::move(prepared.value());
    return ok();
  }

  Result<void> launch(const Plan& plan) override {
    executors::LaunchSpec spec = shim_launch_spec(plan);
    // The caller writes the terminal run.json synced right after reading exit.json.
    spec.caller_syncs_outcome = true;
    run_dir_ = plan.run_dir;
    auto shim = context_.launcher->launch(spec, plan.run_dir / "launch.json",
                                          plan.run_dir / "system_logs" / "shim.txt");
    if (!shim.ok()) return shim.error();
    shim_ = *shim;
    return ok();
  }

  std::string describe(const Plan& plan) const override { return argv_text(plan); }
  std::string_view prepares() const override { return "environment"; }

  void watch(boost::asio::io_context& loop, std::function<void()> on_exit) override {
    on_exit_ = std::move(on_exit);
    int pidfd = executors::open_pidfd(shim_.pid);
    if (pidfd >= 0) {
      exit_watch_ = std::make_unique<boost::asio::posix::stream_descriptor>(loop, pidfd);
      exit_watch_->async_wait(boost::asio::posix::descriptor_base::wait_read,
                              [this](const boost::system::error_code&) { on_exit_(); });
      return;
    }
    // Kernels without pidfd: the shim (our child) is polled without being reaped.
    poll_ = std::make_unique<boost::asio::steady_timer>(loop);
    poll_exit();
  }

  void stop() override {
    auto sent = executors::request_cancel(shim_);
    if (!sent.ok()) context_.log->line(sent.error().message);
  }

  void kill() override {
    context_.log->line("the run did not stop within its grace period: killing its processes");
    end_run_processes(run_dir_, *context_.log);
  }

  Result<ExitRecord> release() override {
    exit_watch_.reset();
    poll_.reset();
    int wait_status = 0;
    while (::waitpid(shim_.pid, &wait_status, 0) < 0 && errno == EINTR) {
    }
    end_run_processes(run_dir_, *context_.log);
    return read_exit_record(run_dir_, "wait status " + std::to_string(wait_status));
  }

 private:
  void poll_exit() {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(shim_.pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
        info.si_pid != 0) {
      on_exit_();
      return;
    }
    poll_->expires_after(std::chrono::milliseconds(10));
    poll_->async_wait([this](const boost::system::error_code& ec) {
      if (!ec) poll_exit();
    });
  }

  RunRuntimeContext context_;
  std::optional<executors::environments::PreparedEnvironment> environment_;
  std::filesystem::path run_dir_;
  executors::LaunchedShim shim_;
  std::function<void()> on_exit_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> exit_watch_;
  std::unique_ptr<boost::asio::steady_timer> poll_;
};

// The run in a Docker container, supervised by ContainerWatch; its exit record is written to
// exit.json as the shim writes it for processes, so both kinds of run finish the same way.
class ContainerRunRuntime final : public RunRuntime {
 public:
  explicit ContainerRunRuntime(RunRuntimeContext context) : context_(std::move(context)) {}
  ~ContainerRunRuntime() override { pool_.join(); }

  Result<void> prepare(Plan& plan, const spec::Job& job, Progress progress,
                       std::function<bool()> canceled) override {
    auto config = docker_runtime_config(context_.config, context_.state_dir);
    if (!config.ok()) return config.error();
    auto runtime = docker::make_docker_runtime(*config);
    if (!runtime.ok()) return runtime.error();
    docker_ = std::shared_ptr<docker::ContainerRuntime>(std::move(runtime.value()));
    auto spec = prepare_run_container(*docker_, *config, context_.config, plan, job, *context_.log,
                                      std::move(progress), std::move(canceled));
    if (!spec.ok()) return spec.error();
    spec_ = std::move(spec.value());
    return ok();
  }

  Result<void> launch(const Plan& plan) override {
    run_dir_ = plan.run_dir;
    plan_ = plan;
    if (auto written = write_container_launch(*spec_); !written.ok()) return written.error();
    if (plan.deadline_seconds) settings_.deadline = std::chrono::seconds(*plan.deadline_seconds);
    settings_.grace =
        std::chrono::seconds(static_cast<long long>(std::ceil(plan.kill_grace_seconds)));
    auto id = docker_->create_container(*spec_);
    if (!id.ok()) return id.error();
    auto started = docker_->start_container(*id);
    if (!started.ok()) {
      (void)docker_->remove_container(*id);
      return started.error();
    }
    id_ = *id;
    context_.log->line("container " + id_ + " started from " + spec_->image);
    return ok();
  }

  std::string describe(const Plan& plan) const override {
    return spec_->image + ": " + argv_text(plan);
  }
  std::string_view prepares() const override { return "image"; }
  std::string image() const override { return spec_ ? spec_->image : std::string(); }

  void watch(boost::asio::io_context& loop, std::function<void()> on_exit) override {
    watch_ = std::make_shared<ContainerWatch>(
        loop.get_executor(),
        [this](std::function<void()> work) { boost::asio::post(pool_, std::move(work)); }, docker_,
        id_, settings_);
    watch_->start([this, on_exit = std::move(on_exit)](const ExitRecord& ended) {
      record_ = ended;
      on_exit();
    });
  }

  void stop() override {
    if (watch_) watch_->stop(executors::ExitReason::Canceled);
  }

  // Docker's own stop kills the container after the grace period; a second request changes
  // nothing, so there is nothing more to do here.
  void kill() override { stop(); }

  Result<ExitRecord> release() override {
    pool_.join();
    // Its timers belong to the caller's loop, which does not outlive this call.
    watch_.reset();
    (void)docker_->remove_container(id_);
    record_ = container_exit_record(plan_, record_);
    auto written =
        write_file_atomically(run_dir_ / "exit.json", executors::exit_record_to_json(record_));
    if (!written.ok()) context_.log->line(written.error().message);
    return record_;
  }

 private:
  RunRuntimeContext context_;
  std::shared_ptr<docker::ContainerRuntime> docker_;
  std::optional<docker::ContainerSpec> spec_;
  std::filesystem::path run_dir_;
  Plan plan_;
  std::string id_;
  ContainerWatch::Settings settings_;
  // Two threads: one waits for the container, one can stop it meanwhile.
  boost::asio::thread_pool pool_{2};
  std::shared_ptr<ContainerWatch> watch_;
  ExitRecord record_;
};

}  // namespace

std::unique_ptr<RunRuntime> make_run_runtime(const Plan& plan, RunRuntimeContext context) {
  if (plan.environment_kind == executors::EnvironmentKind::Docker)
    return std::make_unique<ContainerRunRuntime>(std::move(context));
  return std::make_unique<HostRunRuntime>(std::move(context));
}

}  // namespace amlnode::agent
