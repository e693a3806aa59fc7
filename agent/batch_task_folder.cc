#include "agent/batch_task_folder.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "agent/run_steps.h"
#include "common/fs.h"
#include "executors/batch_task.h"

extern char** environ;

namespace amlnode::agent {

namespace fs = std::filesystem;

namespace {

constexpr const char* kBatchFolderError = "BatchFolderFailed";

Error folder_error(const std::string& what, const fs::path& path, int err) {
  return Error{kBatchFolderError, what + " " + path.string() + ": " + std::strerror(err)};
}

std::optional<TaskIdentity> lookup_user(const std::string& name) {
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 || !found)
    return std::nullopt;
  return TaskIdentity{found->pw_uid, found->pw_gid};
}

// Runs a program with the agent's environment, its output thrown away; its exit status.
Result<int> run_quietly(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  int err = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0)
    return Error{kBatchFolderError, "cannot start " + argv[0] + ": " + std::strerror(err)};
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Result<void> make_folder(const fs::path& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST)
    return folder_error("cannot create", path, errno);
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return folder_error("cannot read", path, errno);
  if (!S_ISDIR(st.st_mode))
    return Error{kBatchFolderError, path.string() + " is in the way: it is not a folder"};
  // Made by the agent and the agent's to keep: root's, whatever a umask or an earlier run did.
  if (::chmod(path.c_str(), mode) != 0) return folder_error("cannot set the mode of", path, errno);
  return ok();
}

// The task user must reach its folder: every folder above the Batch root must let others pass.
Result<void> check_reachable(const fs::path& root) {
  for (fs::path dir = root; !dir.empty(); dir = dir.parent_path()) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return folder_error("cannot read", dir, errno);
    if (!(st.st_mode & S_IXOTH))
      return Error{kBatchFolderError,
                   "the task user cannot reach " + root.string() + ": " + dir.string() +
                       " lets no other user pass (mode " + std::to_string((st.st_mode >> 6) & 7) +
                       std::to_string((st.st_mode >> 3) & 7) + std::to_string(st.st_mode & 7) +
                       "); set batch.root_dir in the agent's config to a folder others may "
                       "pass through"};
    if (dir == dir.parent_path()) break;
  }
  return ok();
}

// The whole tree under `top` to the task user, links included but never followed.
Result<void> hand_over(const fs::path& top, const TaskIdentity& who) {
  if (::lchown(top.c_str(), who.uid, who.gid) != 0)
    return folder_error("cannot hand over", top, errno);
  std::error_code ec;
  fs::recursive_directory_iterator it(top, fs::directory_options::none, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (::lchown(it->path().c_str(), who.uid, who.gid) != 0)
      return folder_error("cannot hand over", it->path(), errno);
  }
  if (ec) return Error{kBatchFolderError, "cannot walk " + top.string() + ": " + ec.message()};
  return ok();
}

// The working directory into the task's folder, the run folder's wd/ a link to it.
Result<void> settle_working_dir(const executors::Plan& plan) {
  fs::path run_wd = plan.run_dir / executors::RunFolder::kWorkingDir;
  std::error_code ec;
  bool run_wd_is_link = fs::is_symlink(run_wd, ec);
  if (!run_wd_is_link && fs::is_directory(run_wd, ec) && !fs::exists(plan.working_dir, ec)) {
    if (::rename(run_wd.c_str(), plan.working_dir.c_str()) != 0)
      return folder_error("cannot move the snapshot to", plan.working_dir, errno);
  }
  if (!fs::is_symlink(run_wd, ec)) {
    if (::symlink(plan.working_dir.c_str(), run_wd.c_str()) != 0)
      return folder_error("cannot link", run_wd, errno);
  }
  if (!fs::is_directory(plan.working_dir, ec))
    return Error{kBatchFolderError,
                 "the task's working directory " + plan.working_dir.string() + " is missing"};
  return ok();
}

// stdout.txt and stderr.txt in the task's folder, the agent's (the shim appends to them).
Result<void> make_task_logs(const executors::Plan& plan) {
  for (const auto& log : {plan.std_log, plan.batch->stderr_log}) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return folder_error("cannot create", log, errno);
    ::close(fd);
  }
  return ok();
}

}  // namespace

Result<TaskIdentity> ensure_task_user(const std::string& name) {
  if (auto found = lookup_user(name)) return *found;
  auto made = run_quietly({"useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                           "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment",
                           "amlnode Batch tasks", name});
  if (!made.ok()) return made.error();
  // 9: made meanwhile by another run's preparation.
  if (*made != 0 && *made != 9)
    return Error{kBatchFolderError, "cannot create the task user " + name +
                                        ": useradd exited with " + std::to_string(*made)};
  if (auto found = lookup_user(name)) return *found;
  return Error{kBatchFolderError, "the task user " + name + " is missing after useradd"};
}

Result<std::optional<TaskIdentity>> make_batch_task_folder(const executors::Plan& plan,
                                                           const SystemLog& log) {
  const executors::BatchTaskPlan& batch = *plan.batch;
  std::error_code ec;
  fs::create_directories(batch.root_dir, ec);
  if (ec)
    return Error{kBatchFolderError,
                 "cannot create " + batch.root_dir.string() + ": " + ec.message()};
  for (const auto& [dir, mode] : {std::pair{batch.root_dir, 0755},
                                  {batch.root_dir / "shared", 01777},
                                  {batch.root_dir / "startup", 0755},
                                  {batch.root_dir / "fsmounts", 0755},
                                  {batch.root_dir / "workitems", 0755},
                                  {batch.job_dir, 0755},
                                  {batch.job_dir / "job-1", 0755},
                                  {batch.task_dir, 0755}}) {
    if (auto made = make_folder(dir, static_cast<mode_t>(mode)); !made.ok()) return made.error();
  }
  if (auto settled = settle_working_dir(plan); !settled.ok()) return settled.error();
  if (auto logs = make_task_logs(plan); !logs.ok()) return logs.error();
  // Everything of wd/ the agent makes is made before it is handed over: the task writes there.
  for (const char* made : {"outputs", "logs"}) {
    fs::create_directories(plan.working_dir / made, ec);
    if (ec)
      return Error{kBatchFolderError,
                   "cannot create wd/" + std::string(made) + ": " + ec.message()};
  }
  for (const auto& output : batch.output_dirs) {
    fs::create_directories(output, ec);
    if (ec)
      return Error{kBatchFolderError, "cannot create " + output.string() + ": " + ec.message()};
  }
  if (!batch.executable_file.empty()) {
    // Batch gives a task's resource files mode 0770: whatever the snapshot kept, it can run.
    fs::permissions(batch.executable_file,
                    fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec,
                    fs::perm_options::add | fs::perm_options::nofollow, ec);
  }
  if (auto recorded = executors::write_batch_task_record(plan); !recorded.ok())
    return recorded.error();
  if (batch.user.empty()) return std::optional<TaskIdentity>();
  if (auto reachable = check_reachable(batch.root_dir); !reachable.ok()) return reachable.error();
  auto who = ensure_task_user(batch.user);
  if (!who.ok()) return who.error();
  if (auto handed = hand_over(plan.working_dir, *who); !handed.ok()) return handed.error();
  log.line("batch task " + batch.task_id + " of job " + batch.job_id + ": " +
           batch.task_dir.string() + ", runs as " + batch.user + " (uid " +
           std::to_string(who->uid) + ")");
  return std::optional<TaskIdentity>(*who);
}

void remove_batch_job_folder(const fs::path& run_dir, const fs::path& batch_root) {
  auto record = executors::read_batch_task_record(run_dir);
  if (!record || !record->delete_job_after_finish) return;
  std::error_code ec;
  fs::remove_all(executors::batch_job_dir(batch_root, run_dir.filename().string()), ec);
}

}  // namespace amlnode::agent
