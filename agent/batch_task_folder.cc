#include "agent/batch_task_folder.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
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

// A folder of the Batch layout. One the agent makes gets `mode`; one that is there already must
// be a folder of the agent's that nobody else may change (the shared folder excepted, which every
// task may write), and keeps its mode.
Result<void> make_folder(const fs::path& path, mode_t mode) {
  bool made = ::mkdir(path.c_str(), 0700) == 0;
  if (!made && errno != EEXIST) return folder_error("cannot create", path, errno);
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP || errno == ENOTDIR)
      return Error{kBatchFolderError, path.string() + " is in the way: it is not a folder"};
    return folder_error("cannot open", path, errno);
  }
  struct stat st {};
  Result<void> result = ok();
  if (::fstat(fd, &st) != 0) {
    result = folder_error("cannot read", path, errno);
  } else if (made) {
    if (::fchmod(fd, mode) != 0) result = folder_error("cannot set the mode of", path, errno);
  } else if (st.st_uid != ::geteuid() || ((st.st_mode & 022) != 0 && mode != 01777)) {
    result = Error{kBatchFolderError, path.string() +
                                          " is not the agent's alone (another owner, or others may "
                                          "write in it); a task's folders cannot be made there"};
  }
  ::close(fd);
  return result;
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

// How deep a task's working directory may go: each level holds a descriptor while it is walked.
constexpr int kMaxTreeDepth = 128;

// Walks the folder open as `dir_fd` bottom-up, never following a link: `act` gets each entry
// (its folder's descriptor and its name), a folder's entries before the folder itself.
Result<void> walk_bottom_up(int dir_fd, const fs::path& where, int depth,
                            const std::function<Result<void>(int, const char*, bool)>& act) {
  if (depth > kMaxTreeDepth)
    return Error{kBatchFolderError,
                 where.string() + ": folders nested deeper than " + std::to_string(kMaxTreeDepth)};
  int listing = ::dup(dir_fd);
  DIR* dir = listing < 0 ? nullptr : ::fdopendir(listing);
  if (!dir) {
    if (listing >= 0) ::close(listing);
    return folder_error("cannot list", where, errno);
  }
  std::vector<std::pair<std::string, bool>> entries;
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    entries.emplace_back(name, S_ISDIR(st.st_mode));
  }
  ::closedir(dir);
  for (const auto& [name, is_dir] : entries) {
    if (is_dir) {
      int sub = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      // Replaced by something else meanwhile: it is acted on as what it is now, never entered.
      if (sub >= 0) {
        auto walked = walk_bottom_up(sub, where / name, depth + 1, act);
        ::close(sub);
        if (!walked.ok()) return walked;
      }
    }
    if (auto done = act(dir_fd, name.c_str(), is_dir); !done.ok()) return done;
  }
  return ok();
}

int open_folder(const fs::path& path) {
  return ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

// The whole tree under `top` to the task user. Bottom-up: every folder is still the agent's while
// its entries are handed over, so nothing of the task's can swap an entry for a link meanwhile;
// and nothing is followed (fchownat with AT_SYMLINK_NOFOLLOW on the entry in its folder).
Result<void> hand_over(const fs::path& top, const TaskIdentity& who) {
  int fd = open_folder(top);
  if (fd < 0) return folder_error("cannot open", top, errno);
  auto walked = walk_bottom_up(fd, top, 0, [&](int dir_fd, const char* name, bool) -> Result<void> {
    if (::fchownat(dir_fd, name, who.uid, who.gid, AT_SYMLINK_NOFOLLOW) != 0)
      return folder_error("cannot hand over", top / name, errno);
    return ok();
  });
  if (walked.ok() && ::fchown(fd, who.uid, who.gid) != 0)
    walked = folder_error("cannot hand over", top, errno);
  ::close(fd);
  return walked;
}

// Removes `path` and everything below it without following a link: what the task user owns may
// change while it goes, and the agent must never be led elsewhere.
void remove_tree(const fs::path& path) {
  int fd = open_folder(path);
  if (fd >= 0) {
    walk_bottom_up(fd, path, 0, [](int dir_fd, const char* name, bool is_dir) -> Result<void> {
      ::unlinkat(dir_fd, name, is_dir ? AT_REMOVEDIR : 0);
      return ok();
    });
    ::close(fd);
  }
  ::rmdir(path.c_str());
  ::unlink(path.c_str());  // a link or a file where the folder was
}

// A fresh snapshot into the task's folder: one left by an earlier preparation of this run (an
// agent restarted, the run leased here again) goes first, and a Batch root on another file
// system gets a copy.
Result<void> move_snapshot(const fs::path& snapshot, const fs::path& working_dir) {
  std::error_code ec;
  if (fs::exists(fs::symlink_status(working_dir, ec))) {
    fs::path stale = working_dir.parent_path() / (".stale-wd-" + std::to_string(::getpid()));
    if (::rename(working_dir.c_str(), stale.c_str()) != 0)
      return folder_error("cannot set aside", working_dir, errno);
    remove_tree(stale);
  }
  if (::rename(snapshot.c_str(), working_dir.c_str()) == 0) return ok();
  if (errno != EXDEV) return folder_error("cannot move the snapshot to", working_dir, errno);
  fs::copy(snapshot, working_dir, fs::copy_options::recursive | fs::copy_options::copy_symlinks,
           ec);
  if (ec)
    return Error{kBatchFolderError,
                 "cannot copy the snapshot to " + working_dir.string() + ": " + ec.message()};
  fs::remove_all(snapshot, ec);  // the agent's own, just extracted: nothing of a task's is in it
  return ok();
}

// The working directory into the task's folder, the run folder's wd/ a link to it.
Result<void> settle_working_dir(const executors::Plan& plan) {
  fs::path run_wd = plan.run_dir / executors::RunFolder::kWorkingDir;
  std::error_code ec;
  auto status = fs::symlink_status(run_wd, ec);
  if (fs::is_directory(status)) {
    if (auto moved = move_snapshot(run_wd, plan.working_dir); !moved.ok()) return moved;
  }
  if (!fs::is_symlink(fs::symlink_status(run_wd, ec))) {
    if (::symlink(plan.working_dir.c_str(), run_wd.c_str()) != 0)
      return folder_error("cannot link", run_wd, errno);
  }
  if (!fs::is_directory(fs::symlink_status(plan.working_dir, ec)))
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

std::optional<TaskIdentity> find_task_user(const std::string& name) {
  auto found = lookup_user(name);
  if (!found || found->uid == 0 || found->gid == 0) return std::nullopt;
  return found;
}

Result<TaskIdentity> ensure_task_user(const std::string& name) {
  if (auto found = lookup_user(name)) {
    if (found->uid == 0 || found->gid == 0)
      return Error{
          kBatchFolderError,
          "the task user " + name + " has root's user or group id; a task will not run as it"};
    return *found;
  }
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
  // First: whatever fails below, the job's folder is found again and removed after the run.
  if (auto recorded = executors::write_batch_task_record(plan); !recorded.ok())
    return recorded.error();
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
    // Only a file of its own: a link stays as it is, and the exec says what it finds.
    if (fs::is_regular_file(fs::symlink_status(batch.executable_file, ec)))
      fs::permissions(batch.executable_file,
                      fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec,
                      fs::perm_options::add, ec);
    if (ec)
      return Error{kBatchFolderError, "cannot make " + batch.executable_file.string() +
                                          " executable: " + ec.message()};
  }
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
  remove_tree(executors::batch_job_dir(batch_root, run_dir.filename().string()));
}

}  // namespace amlnode::agent
