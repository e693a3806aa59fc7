#include "remote/attach.h"

#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "common/format.h"
#include "common/json.h"

namespace amlnode::remote {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kAttachedFile = "/etc/amlnode/attached.json";
// Root's, not the service user's (whose files a job could rewrite): the pid root kills by.
constexpr const char* kPidFile = "/run/amlnode/agent.pid";
constexpr std::chrono::seconds kLongCommand{300};  // install, start, stop, remove
constexpr const char* kAgentLog = "/var/lib/amlnode/agent.log";
constexpr const char* kBinaries[] = {"amlnode", "amlnode-shim", "amlnode-parallel-node"};
constexpr const char* kSystemdFiles[] = {"install.sh", "amlnode.yml", "amlnode.service"};

// "attach: STEP: cause" (or detach's): every failure names its step.
Error step_error(const std::string& verb, const std::string& step, const Error& cause) {
  return Error{cause.code, verb + ": " + step + ": " + cause.message};
}

// Starts the agent without systemd: as the service user, in a session of its own, so it outlives
// the SSH session; an agent this script started before is stopped first (an upgrade restarts).
// Stops the agent in the pid file, if it is one: only a process whose program is the installed
// amlnode is killed (a pid file outlives its process, and pids are reused). SIGKILL after 30 s;
// exit 1 when even that did not end it.
std::string stop_script() {
  return std::string("p=$(cat ") + kPidFile + " 2>/dev/null) || exit 0\n" +
         R"sh(case "$(readlink /proc/"$p"/exe 2>/dev/null)" in /usr/local/bin/amlnode*) ;; *) exit 0 ;; esac
kill "$p" 2>/dev/null || exit 0
for i in $(seq 1 300); do kill -0 "$p" 2>/dev/null || exit 0; sleep 0.1; done
kill -9 "$p"; sleep 0.2; kill -0 "$p" 2>/dev/null && exit 1
exit 0
)sh";
}

// Starts the agent without systemd (an agent it started before is stopped first): as the service
// user (its log opened as that user too), in a session of its own so it outlives the SSH session,
// with a clean environment.
std::string start_script() {
  return "stop_old() {\n" + stop_script() + "}\n(stop_old) || exit 1\n" +
         "mkdir -p /run/amlnode && chmod 0755 /run/amlnode\n" +
         "env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/amlnode "
         "setsid setpriv --reuid=amlnode --regid=amlnode --init-groups -- /bin/sh -c "
         "'exec /usr/local/bin/amlnode agent --config /etc/amlnode/config.yml >>" +
         kAgentLog + " 2>&1' </dev/null >/dev/null 2>&1 &\necho $! >" + kPidFile + "\n";
}

// What attach and detach both do on the host: log in, probe, run commands as root.
class HostWork {
 protected:
  HostWork(const std::string& host, int port, const Credentials& credentials,
           const HostKeyPolicy& host_key, const std::string& local_arch)
      : host_(host),
        port_(port),
        credentials_(credentials),
        host_key_(host_key),
        local_arch_(local_arch) {}

  template <class Step>
  Result<void> timed(std::vector<AttachStep>& steps, const std::string& name, Step step) {
    auto begin = Clock::now();
    Result<void> outcome = step();
    steps.push_back({name, std::chrono::duration<double>(Clock::now() - begin).count()});
    return outcome;
  }

  // Runs a command as root (sudo -n unless the user is root); its failure names the step.
  Result<CommandResult> as_root(const std::string& step, const std::string& command,
                                const std::string& input = "",
                                std::chrono::seconds timeout = kLongCommand) {
    auto ran = session_->run(sudo_ + command, input, 1 << 20, timeout);
    if (!ran.ok()) return step_error(verb_, step, ran.error());
    if (ran->exit_code != 0)
      return Error{kCommandFailed, verb_ + ": " + step + ": exit " +
                                       std::to_string(ran->exit_code) + ": " +
                                       ran->output.substr(0, 4000)};
    return ran;
  }

  Result<void> login() {
    auto session = connect_ssh(host_, port_, std::chrono::seconds(15));
    if (!session.ok()) return step_error(verb_, "connect", session.error());
    session_ = std::move(*session);
    auto verified = session_->verify_host_key(host_key_);
    if (!verified.ok()) return step_error(verb_, "host key", verified.error());
    host_key_recorded_ = *verified;
    if (auto in = session_->authenticate(credentials_); !in.ok())
      return step_error(verb_, "login", in.error());
    return ok();
  }

  // `check`: whether the host must be one the agent can be installed on (not for detach).
  Result<void> probe(bool check = true) {
    auto ran = session_->run("/bin/sh -s", probe_script());
    if (!ran.ok()) return step_error(verb_, "probe", ran.error());
    auto facts = parse_probe(ran->output);
    if (!facts.ok()) return step_error(verb_, "probe", facts.error());
    if (auto fits = check_host(*facts, local_arch_); check && !fits.ok())
      return step_error(verb_, "probe", fits.error());
    facts_ = *facts;
    sudo_ = facts->root ? "" : "sudo -n ";
    return ok();
  }

  // The attachment the host records, null when it has none.
  Result<nlohmann::json> attachment() {
    auto present = session_->run(sudo_ + "test -e " + kAttachedFile);
    if (!present.ok()) return step_error(verb_, "attached", present.error());
    if (present->exit_code != 0) return nlohmann::json();
    auto ran =
        as_root("attached", std::string("cat ") + kAttachedFile, "", std::chrono::seconds(60));
    if (!ran.ok()) return ran.error();
    // What the host says is not trusted: a file that is not what attach writes is refused.
    auto attached = parse_untrusted_json(ran->output);
    bool valid = attached.is_object();
    for (const char* field : {"compute", "control_plane", "node_id", "started"})
      valid = valid && attached.contains(field) && attached[field].is_string();
    if (valid) {
      const std::string id = attached["node_id"];
      valid = id.find_first_not_of(
                  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") ==
              std::string::npos;
    }
    if (!valid)
      return Error{kCommandFailed, verb_ + ": attached: " + kAttachedFile +
                                       " on the host is not an attachment this command wrote; "
                                       "look at it, and remove it if the host has no agent"};
    return attached;
  }

  // Stops an agent attach started, the way it was started: the service, or the process in the
  // pid file.
  Result<void> stop_agent(const std::string& step, bool by_systemd) {
    auto ran = by_systemd ? as_root(step, "systemctl disable --now amlnode")
                          : as_root(step, "sh -s", stop_script());
    return ran.ok() ? ok() : Result<void>(ran.error());
  }

  std::string host_;
  int port_;
  const Credentials& credentials_;
  const HostKeyPolicy& host_key_;
  std::string local_arch_;
  std::unique_ptr<SshSession> session_;
  HostFacts facts_;
  bool host_key_recorded_ = false;
  std::string sudo_;
  std::string verb_ = "attach";
};

class Attachment : HostWork {
 public:
  Attachment(const AttachRequest& request, const AttachControlPlane& control_plane)
      : HostWork(request.host, request.port, request.credentials, request.host_key,
                 request.local_arch),
        request_(request),
        control_plane_(control_plane) {}
  // The staging folder goes on every path: it may hold a registration token.
  ~Attachment() {
    if (session_ && !stage_.empty()) (void)session_->run("rm -rf " + shell_quote(stage_));
  }

  Result<AttachReport> run() {
    if (auto r = timed("connect", [&] { return login_and_probe(); }); !r.ok()) return r.error();
    if (auto r = timed("probe", [&] { return probe_host(); }); !r.ok()) return r.error();
    if (auto r = timed("attached", [&] { return check_attached(); }); !r.ok()) return r.error();
    if (auto r = timed("upload", [&] { return upload(); }); !r.ok()) return r.error();
    if (auto r = timed("install", [&] { return install(); }); !r.ok()) return r.error();
    if (auto r = timed("start", [&] { return start(); }); !r.ok()) return r.error();
    if (auto r = timed("register", [&] { return wait_registered(); }); !r.ok()) return r.error();
    if (auto r = record_attachment(report_.node_id); !r.ok()) return r.error();
    return report_;
  }

 private:
  template <class Step>
  Result<void> timed(const std::string& name, Step step) {
    return HostWork::timed(report_.steps, name, step);
  }

  Result<void> login_and_probe() {
    if (auto in = login(); !in.ok()) return in;
    report_.host_key_recorded = host_key_recorded_;
    return ok();
  }

  Result<void> probe_host() {
    if (auto probed = probe(); !probed.ok()) return probed;
    report_.facts = facts_;
    report_.previous_version = facts_.agent_version;
    return ok();
  }

  // A host attached to another compute is refused; to this one, it is repaired or upgraded.
  Result<void> check_attached() {
    auto found = attachment();
    if (!found.ok()) return found.error();
    const nlohmann::json& attached = *found;
    if (!attached.is_object()) return ok();
    attached_before_ = true;
    std::string compute = attached["compute"];
    std::string url = attached["control_plane"];
    if (compute != request_.compute || url != control_plane_.url)
      return Error{kAlreadyAttached,
                   "attach: attached: " + request_.host + " is attached to compute " + compute +
                       " of the control plane " + url +
                       "; a second attachment breaks the first: detach it there first"};
    previous_node_ = attached["node_id"];
    // A node the control plane no longer has keeps an identity nothing accepts: attach then
    // starts the agent afresh, as a new node.
    if (!previous_node_.empty() && control_plane_.node_known) {
      auto known = control_plane_.node_known(previous_node_);
      if (!known.ok()) return step_error(verb_, "attached", known.error());
      if (!*known) previous_node_.clear();
    }
    return ok();
  }

  Result<void> upload() {
    auto made = session_->run("mktemp -d /tmp/amlnode-attach.XXXXXX");
    if (!made.ok()) return step_error(verb_, "upload", made.error());
    std::string path = made->output.substr(0, made->output.find('\n'));
    // Everything goes below this folder, and it is removed at the end: it must be what mktemp
    // makes, nothing a login script printed.
    if (made->exit_code != 0 ||
        !std::regex_match(path, std::regex("/tmp/amlnode-attach\\.[A-Za-z0-9]{6}")))
      return Error{kTransferFailed, "attach: upload: making a staging folder failed (exit " +
                                        std::to_string(made->exit_code) +
                                        "): " + made->output.substr(0, 500)};
    stage_ = path;
    std::vector<fs::path> python;
    std::string folders = shell_quote(stage_ + "/bin") + " " + shell_quote(stage_ + "/systemd");
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(request_.agent.python_dir, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      auto relative = it->path().lexically_relative(request_.agent.python_dir).generic_string();
      if (relative.find("__pycache__") != std::string::npos) continue;
      if (it->is_directory())
        folders += " " + shell_quote(stage_ + "/share/amlnode/python/" + relative);
      if (it->is_regular_file()) python.push_back(it->path());
    }
    auto mkdir =
        session_->run("mkdir -p " + shell_quote(stage_ + "/share/amlnode/python") + " " + folders);
    if (!mkdir.ok() || mkdir->exit_code != 0)
      return Error{kTransferFailed, "attach: upload: making the staging folders failed"};
    for (const char* name : kBinaries) {
      if (auto sent =
              session_->upload(request_.agent.bin_dir / name, stage_ + "/bin/" + name, 0755);
          !sent.ok())
        return step_error(verb_, "upload", sent.error());
    }
    for (const char* name : kSystemdFiles) {
      if (auto sent = session_->upload(request_.agent.systemd_dir / name,
                                       stage_ + "/systemd/" + name, 0755);
          !sent.ok())
        return step_error(verb_, "upload", sent.error());
    }
    for (const auto& file : python) {
      auto relative = file.lexically_relative(request_.agent.python_dir).generic_string();
      if (auto sent = session_->upload(file, stage_ + "/share/amlnode/python/" + relative, 0644);
          !sent.ok())
        return step_error(verb_, "upload", sent.error());
    }
    // A node that registered before keeps its identity: it needs no token, and gets none.
    if (previous_node_.empty()) {
      auto token = control_plane_.create_token(request_.compute);
      if (!token.ok()) return step_error(verb_, "registration token", token.error());
      token_ = *token;
      // The token goes in a file of its own, over SFTP: never on a command line or in a shell.
      if (auto sent = session_->write_file(stage_ + "/registration_token", token_, 0600);
          !sent.ok())
        return step_error(verb_, "upload", sent.error());
    }
    if (auto sent = session_->write_file(stage_ + "/config.yml", config_text(), 0600); !sent.ok())
      return step_error(verb_, "upload", sent.error());
    return ok();
  }

  std::string config_text() const {
    std::string text =
        "state_dir: /var/lib/amlnode\ncontrol_plane:\n  url: " + control_plane_.url + "\n";
    if (!token_.empty()) text += "  registration_token_file: /etc/amlnode/registration_token\n";
    if (!control_plane_.ca_file.empty()) text += "  ca_file: /etc/amlnode/ca.pem\n";
    return text + "node:\n  labels:\n    compute_name: " + request_.compute +
           "\n    compute_kind: " + request_.kind + "\n";
  }

  Result<void> install() {
    std::string from = shell_quote(stage_ + "/bin");
    std::string command =
        "sh " + shell_quote(stage_ + "/systemd/install.sh") + " --from " + from + " && " + sudo_ +
        "install -m 0640 -o root -g amlnode " + shell_quote(stage_ + "/config.yml") +
        " /etc/amlnode/config.yml && " + sudo_ + "mkdir -p /usr/local/share/amlnode && " + sudo_ +
        "rm -rf /usr/local/share/amlnode/python && " + sudo_ + "cp -r " +
        shell_quote(stage_ + "/share/amlnode/python") + " /usr/local/share/amlnode/ && " + sudo_ +
        "rm -rf /usr/local/share/amlnode/systemd && " + sudo_ + "cp -r " +
        shell_quote(stage_ + "/systemd") + " /usr/local/share/amlnode/";
    if (!token_.empty())
      command += " && " + sudo_ + "install -m 0640 -o root -g amlnode " +
                 shell_quote(stage_ + "/registration_token") + " /etc/amlnode/registration_token";
    // An attach that never learnt its node (it timed out) leaves an identity nobody knows: the
    // agent starts afresh with the new token.
    if (attached_before_ && previous_node_.empty())
      command += " && " + sudo_ +
                 "rm -f /var/lib/amlnode/agent.db /var/lib/amlnode/agent.db-wal "
                 "/var/lib/amlnode/agent.db-shm";
    if (!control_plane_.ca_file.empty()) {
      if (auto sent = session_->upload(control_plane_.ca_file, stage_ + "/ca.pem", 0644);
          !sent.ok())
        return step_error(verb_, "install", sent.error());
      command += " && " + sudo_ + "install -m 0644 " + shell_quote(stage_ + "/ca.pem") +
                 " /etc/amlnode/ca.pem";
    }
    auto ran = as_root("install", command);
    return ran.ok() ? ok() : Result<void>(ran.error());
  }

  Result<void> start() {
    // Recorded before the agent starts: a later attach or detach finds the host attached even
    // when this one ends before the node registers.
    if (auto recorded = record_attachment(previous_node_); !recorded.ok()) return recorded;
    if (facts_.systemd) {
      auto ran =
          as_root("start", "systemctl enable amlnode && " + sudo_ + "systemctl restart amlnode");
      if (!ran.ok()) return ran.error();
      report_.started = "systemctl enable amlnode, systemctl restart amlnode";
      return ok();
    }
    auto ran = as_root("start", "sh -s", start_script());
    if (!ran.ok()) return ran.error();
    report_.started = std::string(
                          "no running systemd: started as the amlnode user in a session of "
                          "its own (pid in ") +
                      kPidFile + ", log in " + kAgentLog + ")";
    return ok();
  }

  Result<void> wait_registered() {
    auto give_up = Clock::now() + request_.timeout;
    auto delay = std::chrono::milliseconds(20);
    int polls = 0;
    bool died = false;
    while (Clock::now() < give_up) {
      // A node attached before keeps its identity and spends no token: its agent running is it.
      if (!previous_node_.empty()) {
        report_.node_id = previous_node_;
        if (agent_running()) return ok();
      } else {
        auto node = control_plane_.node_of_token(token_);
        if (!node.ok()) return step_error(verb_, "register", node.error());
        if (*node) {
          report_.node_id = **node;
          // Spent: the token opens nothing more, and need not stay on the host.
          (void)session_->run(sudo_ + "rm -f /etc/amlnode/registration_token");
          return ok();
        }
      }
      if (++polls % 8 == 0 && !agent_running()) {
        died = true;
        break;
      }
      std::this_thread::sleep_for(delay);
      delay = std::min(delay * 2, std::chrono::milliseconds(500));
    }
    std::string log;
    auto tail = session_->run(sudo_ + (facts_.systemd
                                           ? std::string("journalctl -u amlnode -n 20 --no-pager")
                                           : std::string("tail -n 20 ") + kAgentLog));
    if (tail.ok()) log = tail->output;
    return Error{kRegistrationTimedOut,
                 "attach: register: " +
                     (died ? std::string("the agent stopped before its node registered")
                           : "the node did not register within " +
                                 std::to_string(request_.timeout.count()) + " s") +
                     "; its log ends:\n" + log};
  }

  bool agent_running() {
    if (facts_.systemd) {
      auto ran = session_->run(sudo_ + "systemctl is-active --quiet amlnode");
      return ran.ok() && ran->exit_code == 0;
    }
    auto ran = session_->run(sudo_ + std::string("sh -c 'kill -0 \"$(cat ") + kPidFile + ")\"'");
    return ran.ok() && ran->exit_code == 0;
  }

  Result<void> record_attachment(const std::string& node_id) {
    nlohmann::json attached = {{"compute", request_.compute},
                               {"control_plane", control_plane_.url},
                               {"kind", request_.kind},
                               {"node_id", node_id},
                               {"started", facts_.systemd ? "systemd" : "session"},
                               {"version", request_.agent.version}};
    if (auto sent = session_->write_file(stage_ + "/attached.json", attached.dump(2) + "\n", 0644);
        !sent.ok())
      return step_error(verb_, "record", sent.error());
    auto ran = as_root("record", "install -m 0644 " + shell_quote(stage_ + "/attached.json") + " " +
                                     kAttachedFile);
    return ran.ok() ? ok() : Result<void>(ran.error());
  }

  const AttachRequest& request_;
  const AttachControlPlane& control_plane_;
  AttachReport report_;
  std::string stage_;
  std::string token_;
  bool attached_before_ = false;
  std::string previous_node_;
};

class Detachment : HostWork {
 public:
  Detachment(const DetachRequest& request, const DetachControlPlane& control_plane)
      : HostWork(request.host, request.port, request.credentials, request.host_key,
                 request.local_arch),
        request_(request),
        control_plane_(control_plane) {
    verb_ = "detach";
  }

  Result<DetachReport> run() {
    if (auto r = timed(report_.steps, "connect", [&] { return login(); }); !r.ok())
      return r.error();
    // Whatever the host is now, what attach put there can be taken away: no host rules.
    if (auto r = timed(report_.steps, "probe", [&] { return probe(false); }); !r.ok())
      return r.error();
    if (auto r = timed(report_.steps, "attached", [&] { return find_node(); }); !r.ok())
      return r.error();
    if (auto r = timed(report_.steps, "drain", [&] { return drain(); }); !r.ok()) return r.error();
    if (auto r = timed(report_.steps, "stop", [&] { return stop_agent("stop", by_systemd_); });
        !r.ok())
      return r.error();
    // The node goes before the files that name it, so a detach that fails later can run again.
    if (in_control_plane_) {
      if (auto r = control_plane_.remove_node(report_.node_id); !r.ok())
        return step_error(verb_, "deregister", r.error());
    }
    if (auto r = timed(report_.steps, "remove", [&] { return remove(); }); !r.ok())
      return r.error();
    return report_;
  }

 private:
  Result<void> find_node() {
    auto found = attachment();
    if (!found.ok()) return found.error();
    if (!found->is_object())
      return Error{kNotAttached,
                   "detach: attached: " + request_.host + " has no agent attach installed"};
    std::string compute = (*found)["compute"];
    std::string url = (*found)["control_plane"];
    if (compute != request_.compute || url != request_.control_plane_url)
      return Error{kNotAttached, "detach: attached: " + request_.host + " is attached to compute " +
                                     compute + " of the control plane " + url + ", not " +
                                     request_.compute + " of " + request_.control_plane_url};
    report_.node_id = (*found)["node_id"];
    by_systemd_ = (*found)["started"] == "systemd";
    return ok();
  }

  // No new runs for the node; the ones it holds run to their end (up to the timeout).
  Result<void> drain() {
    if (report_.node_id.empty()) return ok();
    auto known = control_plane_.drain(report_.node_id);
    if (!known.ok()) return step_error(verb_, "drain", known.error());
    in_control_plane_ = *known;
    auto give_up = Clock::now() + request_.timeout;
    while (in_control_plane_) {
      auto busy = control_plane_.holds_runs(report_.node_id);
      if (!busy.ok()) return step_error(verb_, "drain", busy.error());
      if (!*busy) return ok();
      if (Clock::now() > give_up)
        return Error{kCommandFailed, "detach: drain: the node still holds a run after " +
                                         std::to_string(request_.timeout.count()) + " s"};
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return ok();
  }

  Result<void> remove() {
    std::string command = "sh /usr/local/share/amlnode/systemd/install.sh --uninstall" +
                          std::string(request_.purge ? " --purge" : "") + " && " + sudo_ +
                          "rm -rf /usr/local/share/amlnode /run/amlnode && " + sudo_ +
                          "rm -f /etc/amlnode/attached.json /etc/amlnode/registration_token "
                          "/var/lib/amlnode/agent.db /var/lib/amlnode/agent.db-wal "
                          "/var/lib/amlnode/agent.db-shm " +
                          kPidFile;
    auto ran = as_root("remove", command);
    return ran.ok() ? ok() : Result<void>(ran.error());
  }

  const DetachRequest& request_;
  const DetachControlPlane& control_plane_;
  DetachReport report_;
  bool in_control_plane_ = false;
  bool by_systemd_ = false;
};

}  // namespace

Result<DetachReport> detach(const DetachRequest& request, const DetachControlPlane& control_plane) {
  return Detachment(request, control_plane).run();
}

Result<AttachReport> attach(const AttachRequest& request, const AttachControlPlane& control_plane) {
  return Attachment(request, control_plane).run();
}

}  // namespace amlnode::remote
