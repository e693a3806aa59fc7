#include "agent/daemon/run_execution.h"

#include <fcntl.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "agent/daemon/container_runs.h"
#include "agent/daemon/launch_recovery.h"
#include "common/error_codes.h"
#include "common/fs.h"
#include "common/json.h"
#include "executors/archive.h"
#include "executors/batch_task.h"
#include "executors/run_folder.h"
#include "spec/load.h"

namespace amlnode::agent {

namespace fs = std::filesystem;

namespace {

// Azure ML's snapshot limit, plus room for the archive's own overhead.
constexpr std::uint64_t kMaxSnapshotDownload = 310ull << 20;
// Outputs are read into memory to be sent; the control plane's limit for them.
constexpr std::size_t kMaxOutputsArchive = 300ull << 20;

Result<spec::Job> load_job(const LeasedRun& lease, const fs::path& working_dir) {
  spec::LoadOptions options;
  options.source_dir_override = working_dir;
  auto loaded = spec::load_job_text(lease.job_text, working_dir / lease.job_file_name, options);
  if (!loaded.ok()) {
    std::string message;
    for (const auto& error : loaded.errors)
      message += (message.empty() ? "" : "; ") + error.to_string();
    return Error{"InvalidJob", message};
  }
  if (!lease.experiment_name.empty()) loaded.job->experiment_name = lease.experiment_name;
  return std::move(*loaded.job);
}

Result<void> fetch_snapshot(const RunEnvironment& env, const NodeIdentity& node,
                            const LeasedRun& lease, const fs::path& run_dir, const SystemLog& log) {
  fs::path archive = run_dir / "snapshot.tar.gz";
  // A control plane that is down or restarting is waited for: an outage must not fail the run.
  // The loop ends when the client is shut down (the agent stopping: "Canceled").
  auto delay = std::chrono::milliseconds(200);
  for (;;) {
    auto downloaded = env.client->download_snapshot(node, lease.run_id, lease.epoch, archive,
                                                    kMaxSnapshotDownload);
    if (downloaded.ok()) break;
    if (downloaded.error().code != errors::kUnreachable) return downloaded.error();
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(5000));
  }
  auto extracted = executors::extract_snapshot(archive, run_dir / "wd");
  std::error_code ec;
  fs::remove(archive, ec);
  if (!extracted.ok()) return extracted.error();
  log.line("snapshot: " + std::to_string(extracted->files) + " files, " +
           std::to_string(extracted->bytes) + " bytes extracted into wd/");
  return ok();
}

}  // namespace

RunRuntimeContext runtime_context(const RunEnvironment& env, const LeasedRun& lease) {
  RunRuntimeContext context;
  context.config = env.config;
  context.state_dir = env.state_dir;
  context.clock = env.clock;
  context.launcher = env.launcher.get();
  if (env.before_launch) {
    context.before_launch = [hook = env.before_launch, lease] {
      auto marked = hook(lease);
      if (marked.ok()) test_hook_crash_at("after-launch-marker");
      return marked;
    };
  }
  if (env.on_container_created) {
    context.on_container_created = [hook = env.on_container_created,
                                    run_id = lease.run_id](const std::string& id) {
      hook(run_id, id);
      test_hook_crash_at("after-container-created");
    };
  }
  context.docker = env.docker;
  context.docker_config = env.docker_config;
  if (!env.docker) {
    context.docker_refused = Error{"NotSupported",
                                   "this node does not run Docker jobs (no docker section in its "
                                   "config, or docker.enabled: false)"};
  }
  context.blocking = env.blocking;
  context.wait_out_docker_outages = true;
  return context;
}

executors::PlanContext leased_plan_context(
    const RunEnvironment& env, const LeasedRun& lease,
    const executors::environments::EnvironmentConfig& environments) {
  auto context =
      plan_context(env.config, env.state_dir, lease.run_id, env.kill_grace_seconds, environments);
  if (lease.node_count > 1) {
    executors::ShareContext share;
    share.node_rank = lease.node_rank;
    share.master_port = lease.master_port;
    for (const auto& node : lease.nodes) share.addresses.push_back(node.address);
    share.launch_url = env.control_plane_url;
    share.launch_token = lease.launch_token;
    share.launch_ca_file = env.control_plane_ca_file;
    share.agent_program = env.agent_program;
    context.master_address = share.addresses.front();
    context.share = std::move(share);
  }
  context.leased = true;
  context.compute_name = lease.compute_name;
  context.node_id = lease.node_id;
  if (!lease.compute_kind.empty()) context.compute_kind = lease.compute_kind;
  context.batch_pool_id = lease.batch_pool_id;
  context.batch_account_name = lease.batch_account_name;
  context.batch_account_url = env.control_plane_url;
  return context;
}

namespace {

// How long one barrier call waits before it is made again (checking for a cancel in between).
constexpr std::chrono::seconds kBarrierPoll{5};

}  // namespace

Result<void> wait_at_barrier(const RunEnvironment& env, const NodeIdentity& node,
                             const LeasedRun& lease) {
  SystemLog log(executors::RunFolder::of(env.state_dir, lease.run_id).root, env.clock);
  log.line("node rank " + std::to_string(lease.node_rank) + " of " +
           std::to_string(lease.node_count) + " prepared; waiting for the other shares");
  auto delay = std::chrono::milliseconds(200);
  for (;;) {
    if (env.canceled && env.canceled(lease.run_id))
      return Error{errors::kCanceled, "The run was canceled before its processes started"};
    auto open = env.client->wait_at_barrier(node, lease.run_id, lease.epoch, kBarrierPoll);
    if (open.ok() && *open) break;
    if (!open.ok() && open.error().code != errors::kUnreachable) return open.error();
    if (!open.ok()) {
      std::this_thread::sleep_for(delay);
      delay = std::min(delay * 2, std::chrono::milliseconds(5000));
    }
  }
  log.line("every share is prepared: starting");
  return ok();
}

Result<std::shared_ptr<StartedRun>> prepare_leased_run(const RunEnvironment& env,
                                                       const NodeIdentity& node,
                                                       const LeasedRun& lease) {
  if (auto made = make_run_folder(env.state_dir, lease.run_id); !made.ok()) return made.error();
  fs::path run_dir = executors::RunFolder::of(env.state_dir, lease.run_id).root;
  SystemLog log(run_dir, env.clock);
  log.line("leased with epoch " + std::to_string(lease.epoch));
  if (auto fetched = fetch_snapshot(env, node, lease, run_dir, log); !fetched.ok())
    return fetched.error();
  auto job = load_job(lease, run_dir / "wd");
  if (!job.ok()) return job.error();
  auto resolved = resolve_node_references(*job, env.config);
  if (!resolved) return resolved.error();
  for (const auto& note : *resolved) log.line(note);
  auto environments = environment_config(env.config, env.state_dir);
  if (!environments.ok()) return environments.error();
  auto started = std::make_shared<StartedRun>();
  started->plan = executors::resolve_plan(*job, leased_plan_context(env, lease, *environments));
  executors::Plan& plan = started->plan;
  if (plan.cannot_run) return *plan.cannot_run;
  if (auto staged = make_outputs_and_stage_inputs(plan, log); !staged.ok()) return staged.error();
  started->runtime = make_run_runtime(plan, runtime_context(env, lease));
  auto canceled = [&env, run_id = lease.run_id] { return env.canceled && env.canceled(run_id); };
  if (auto prepared = started->runtime->prepare(plan, *job, nullptr, canceled); !prepared.ok())
    return prepared.error();
  return started;
}

Result<void> launch_leased_run(const RunEnvironment& env, const NodeIdentity& node,
                               const LeasedRun& lease, const StartedRun& run) {
  if (lease.node_count > 1) {
    if (auto opened = wait_at_barrier(env, node, lease); !opened.ok()) return opened.error();
  }
  auto launched = run.runtime->launch();
  if (launched.ok()) test_hook_crash_at("after-launch");
  return launched;
}

namespace {

std::optional<executors::LaunchedShim> shim_from_state_file(const fs::path& run_dir) {
  auto text = read_file(run_dir / "shim.json", 1 << 20);
  if (!text.ok()) return std::nullopt;
  auto state = parse_untrusted_json(*text);
  if (!state.is_object() || !state.contains("shim_pid") || !state.contains("shim_start_time"))
    return std::nullopt;
  return executors::LaunchedShim{state["shim_pid"].get<pid_t>(),
                                 state["shim_start_time"].get<unsigned long long>()};
}

}  // namespace

Result<executors::Plan> leased_plan(const RunEnvironment& env, const LeasedRun& lease) {
  auto job = load_job(lease, executors::RunFolder::of(env.state_dir, lease.run_id).root / "wd");
  if (!job.ok()) return job.error();
  if (auto resolved = resolve_node_references(*job, env.config); !resolved) return resolved.error();
  auto environments = environment_config(env.config, env.state_dir);
  if (!environments.ok()) return environments.error();
  return executors::resolve_plan(*job, leased_plan_context(env, lease, *environments));
}

Result<std::shared_ptr<StartedRun>> reattach_run(const RunEnvironment& env, const LeasedRun& lease,
                                                 std::optional<executors::LaunchedShim> stored_shim,
                                                 std::optional<std::string> stored_container,
                                                 bool launching) {
  fs::path run_dir = executors::RunFolder::of(env.state_dir, lease.run_id).root;
  if (!stored_shim) {
    auto container = reattach_container_run(env, lease, stored_container, launching);
    if (!container.ok() || *container) return container;
  }
  std::error_code ec;
  bool exited = fs::exists(run_dir / "exit.json", ec);
  auto shim = stored_shim ? stored_shim : shim_from_state_file(run_dir);
  if (!shim && launching) shim = find_shim_process(run_dir / "launch.json");
  if (!shim && !exited && launching) {
    return Error{"LaunchInterrupted",
                 "the agent stopped while starting the run's process, and no trace of that "
                 "process is left; the run is not started again, since it may have run"};
  }
  if (!shim && !exited)
    return Error{errors::kNotStarted, "run " + lease.run_id + " never started a process"};
  auto plan = leased_plan(env, lease);
  if (!plan.ok()) return plan.error();
  FoundRun found;
  found.shim = shim;
  found.shim_alive = shim && executors::is_same_process(shim->pid, shim->start_time);
  SystemLog log(run_dir, env.clock);
  std::string note = found.shim_alive ? "re-attached to shim " + std::to_string(shim->pid)
                                      : "the run's process had ended";
  log.line("agent restarted: " + note);
  if (found.shim_alive) {
    auto environments = environment_config(env.config, env.state_dir);
    if (!environments.ok()) return environments.error();
    found.environment = retake_environment_lease(*plan, *environments, log);
  }
  auto started = std::make_shared<StartedRun>();
  started->plan = std::move(plan.value());
  started->runtime =
      recover_run_runtime(started->plan, runtime_context(env, lease), std::move(found));
  started->found = note;
  return started;
}

void discard_run_folder(const RunEnvironment& env, const std::string& run_id) {
  std::error_code ec;
  fs::remove_all(executors::RunFolder::of(env.state_dir, run_id).root, ec);
}

RunOutcome finalize_run(const RunEnvironment& env, const executors::Plan& plan,
                        const Result<executors::ExitRecord>& exit) {
  SystemLog log(plan.run_dir, env.clock);
  RunOutcome outcome =
      exit.ok() ? outcome_of(*exit, plan) : RunOutcome{spec::RunStatus::Failed, exit.error(), 125};
  if (exit.ok()) apply_script_status(outcome, plan.run_dir, log);
  release_outside_inputs(plan);
  log.line(std::string("run ended: ") + spec::to_string(outcome.status) +
           (outcome.error ? " (" + outcome.error->code + ": " + outcome.error->message + ")" : ""));
  return outcome;
}

namespace {

// The archive of an empty ./outputs (most runs write nothing there) is the same few bytes every
// time: packed once, in memory, instead of walking, writing, syncing and reading back a file for
// each run.
const Result<executors::PackedArchive>& empty_outputs_archive() {
  static const Result<executors::PackedArchive> archive =
      executors::pack_snapshot_to_memory({}, {}, 1 << 20);
  return archive;
}

}  // namespace

Result<void> upload_run_outputs(const RunEnvironment& env, const NodeIdentity& node,
                                const LeasedRun& lease) {
  fs::path run_dir = executors::RunFolder::of(env.state_dir, lease.run_id).root;
  std::error_code ec;
  // The folder is opened without following a link on the way (the run may have put one where
  // wd/outputs was), and packed through that descriptor, so that nothing the run does meanwhile
  // leads the agent elsewhere. A Batch task's wd/ is in its own folder.
  fs::path root = run_dir;
  if (auto task = executors::read_batch_task_record(run_dir))
    root = executors::batch_task_dir(batch_root_dir(env.config, env.state_dir), lease.run_id,
                                     task->task_id);
  auto opened = open_beneath(root, "wd/outputs", O_RDONLY | O_DIRECTORY);
  if (!opened.ok()) {
    if (opened.error().code == kLinkRefused)
      SystemLog(run_dir, env.clock).line("outputs not uploaded: " + opened.error().message);
    return ok();  // never started, or not a folder of the run's
  }
  fs::path outputs = "/proc/self/fd/" + std::to_string(opened->get());
  SystemLog log(run_dir, env.clock);
  fs::path archive = run_dir / "outputs.tar.gz";
  bool empty = fs::is_empty(outputs, ec) && !ec && empty_outputs_archive().ok();
  auto packed = empty ? Result<executors::ArchiveStats>(empty_outputs_archive()->stats)
                      : executors::pack_directory(outputs, archive);
  auto bytes = empty         ? Result<std::string>(empty_outputs_archive()->data)
               : packed.ok() ? read_file(archive, kMaxOutputsArchive)
                             : Result<std::string>(packed.error());
  if (!empty) fs::remove(archive, ec);
  if (!bytes.ok()) {
    log.line("outputs not uploaded: " + bytes.error().message);
    return ok();
  }
  auto uploaded = env.client->upload_outputs(node, lease.run_id, lease.epoch, std::move(*bytes));
  if (!uploaded.ok()) {
    const std::string& code = uploaded.error().code;
    if (code == errors::kUnreachable || code == errors::kStaleEpoch || code == errors::kCanceled)
      return uploaded;
    log.line("outputs not uploaded: " + uploaded.error().message);
    return ok();
  }
  log.line("outputs uploaded (" + std::to_string(packed->files) + " files)");
  return ok();
}

}  // namespace amlnode::agent
