#include "remote/attach.h"

#include <nlohmann/json.hpp>
#include <thread>

namespace amlnode::remote {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kAttachedFile = "/etc/amlnode/attached.json";
constexpr const char* kPidFile = "/var/lib/amlnode/agent.pid";
constexpr const char* kAgentLog = "/var/lib/amlnode/agent.log";
constexpr const char* kBinaries[] = {"amlnode", "amlnode-shim", "amlnode-parallel-node"};
constexpr const char* kSystemdFiles[] = {"install.sh", "amlnode.yml", "amlnode.service"};

// Single-quoted for the remote POSIX shell.
std::string quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// "attach: STEP: cause" (or detach's): every failure names its step.
Error step_error(const std::string& verb, const std::string& step, const Error& cause) {
  return Error{cause.code, verb + ": " + step + ": " + cause.message};
}

// Starts the agent without systemd: as the service user, in a session of its own, so it outlives
// the SSH session; an agent this script started before is stopped first (an upgrade restarts).
std::string start_script() {
  return std::string("pidfile=") + kPidFile + "\n" +
         "if [ -f \"$pidfile\" ] && kill -0 \"$(cat \"$pidfile\")\" 2>/dev/null; then\n"
         "  old=$(cat \"$pidfile\"); kill \"$old\"\n"
         "  for i in $(seq 1 300); do kill -0 \"$old\" 2>/dev/null || break; sleep 0.1; done\n"
         "fi\n"
         "setsid setpriv --reuid=amlnode --regid=amlnode --init-groups -- /usr/local/bin/amlnode "
         "agent --config /etc/amlnode/config.yml >>" +
         kAgentLog +
         " 2>&1 </dev/null &\n"
         "echo $! >\"$pidfile\"\n";
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
                                const std::string& input = "") {
    auto ran = session_->run(sudo_ + command, input);
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

  Result<void> probe() {
    auto ran = session_->run("/bin/sh -s", probe_script());
    if (!ran.ok()) return step_error(verb_, "probe", ran.error());
    auto facts = parse_probe(ran->output);
    if (!facts.ok()) return step_error(verb_, "probe", facts.error());
    if (auto fits = check_host(*facts, local_arch_); !fits.ok())
      return step_error(verb_, "probe", fits.error());
    facts_ = *facts;
    sudo_ = facts->root ? "" : "sudo -n ";
    return ok();
  }

  // The attachment the host records, null when it has none.
  Result<nlohmann::json> attachment() {
    auto ran = session_->run(sudo_ + "cat " + kAttachedFile + " 2>/dev/null");
    if (!ran.ok()) return step_error(verb_, "attached", ran.error());
    if (ran->exit_code != 0) return nlohmann::json();
    auto attached = nlohmann::json::parse(ran->output, nullptr, false);
    return attached.is_object() ? attached : nlohmann::json();
  }

  // Stops an agent attach started: the service, or the process in the pid file.
  Result<void> stop_agent(const std::string& step) {
    std::string command =
        facts_.systemd
            ? std::string("systemctl disable --now amlnode")
            : std::string("sh -c 'p=$(cat ") + kPidFile +
                  R"( 2>/dev/null) || exit 0; kill "$p" 2>/dev/null || exit 0; )"
                  R"(for i in $(seq 1 300); do kill -0 "$p" 2>/dev/null || exit 0; sleep 0.1; )"
                  R"(done; kill -9 "$p"')";
    auto ran = as_root(step, command);
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

  Result<AttachReport> run() {
    if (auto r = timed("connect", [&] { return login_and_probe(); }); !r.ok()) return r.error();
    if (auto r = timed("probe", [&] { return probe_host(); }); !r.ok()) return r.error();
    if (auto r = timed("attached", [&] { return check_attached(); }); !r.ok()) return r.error();
    if (auto r = timed("upload", [&] { return upload(); }); !r.ok()) return r.error();
    if (auto r = timed("install", [&] { return install(); }); !r.ok()) return r.error();
    if (auto r = timed("start", [&] { return start(); }); !r.ok()) return r.error();
    if (auto r = timed("register", [&] { return wait_registered(); }); !r.ok()) return r.error();
    if (auto r = record_attachment(); !r.ok()) return r.error();
    // The staging folder is the user's: a failure to remove it leaves only copies behind.
    (void)session_->run("rm -rf " + quote(stage_));
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
    std::string compute = attached.value("compute", "");
    std::string url = attached.value("control_plane", "");
    if (compute != request_.compute || url != control_plane_.url)
      return Error{kAlreadyAttached,
                   "attach: attached: " + request_.host + " is attached to compute " + compute +
                       " of the control plane " + url +
                       "; a second attachment breaks the first: detach it there first"};
    previous_node_ = attached.value("node_id", "");
    return ok();
  }

  Result<void> upload() {
    auto made = session_->run("mktemp -d /tmp/amlnode-attach.XXXXXX");
    if (!made.ok() || made->exit_code != 0)
      return Error{kTransferFailed, "attach: upload: making a staging folder failed"};
    stage_ = made->output.substr(0, made->output.find('\n'));
    std::vector<fs::path> python;
    std::string folders = quote(stage_ + "/bin") + " " + quote(stage_ + "/systemd");
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(request_.agent.python_dir, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      auto relative = it->path().lexically_relative(request_.agent.python_dir).generic_string();
      if (relative.find("__pycache__") != std::string::npos) continue;
      if (it->is_directory()) folders += " " + quote(stage_ + "/share/amlnode/python/" + relative);
      if (it->is_regular_file()) python.push_back(it->path());
    }
    auto mkdir =
        session_->run("mkdir -p " + quote(stage_ + "/share/amlnode/python") + " " + folders);
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
    auto token = control_plane_.create_token(request_.compute);
    if (!token.ok()) return step_error(verb_, "registration token", token.error());
    token_ = *token;
    // The token goes in a file of its own, over SFTP: never on a command line or in a shell.
    if (auto sent = session_->write_file(stage_ + "/registration_token", token_, 0600); !sent.ok())
      return step_error(verb_, "upload", sent.error());
    return session_->write_file(stage_ + "/config.yml", config_text(), 0600);
  }

  std::string config_text() const {
    std::string text = "state_dir: /var/lib/amlnode\ncontrol_plane:\n  url: " + control_plane_.url +
                       "\n  registration_token_file: /etc/amlnode/registration_token\n";
    if (!control_plane_.ca_file.empty()) text += "  ca_file: /etc/amlnode/ca.pem\n";
    return text + "node:\n  labels:\n    compute_name: " + request_.compute +
           "\n    compute_kind: " + request_.kind + "\n";
  }

  Result<void> install() {
    std::string from = quote(stage_ + "/bin");
    std::string command =
        "sh " + quote(stage_ + "/systemd/install.sh") + " --from " + from + " && " + sudo_ +
        "install -m 0640 -o root -g amlnode " + quote(stage_ + "/config.yml") +
        " /etc/amlnode/config.yml && " + sudo_ + "install -m 0640 -o root -g amlnode " +
        quote(stage_ + "/registration_token") + " /etc/amlnode/registration_token && " + sudo_ +
        "mkdir -p /usr/local/share/amlnode && " + sudo_ +
        "rm -rf /usr/local/share/amlnode/python && " + sudo_ + "cp -r " +
        quote(stage_ + "/share/amlnode/python") + " /usr/local/share/amlnode/ && " + sudo_ +
        "rm -rf /usr/local/share/amlnode/systemd && " + sudo_ + "cp -r " +
        quote(stage_ + "/systemd") + " /usr/local/share/amlnode/";
    if (!control_plane_.ca_file.empty()) {
      if (auto sent = session_->upload(control_plane_.ca_file, stage_ + "/ca.pem", 0644);
          !sent.ok())
        return step_error(verb_, "install", sent.error());
      command +=
          " && " + sudo_ + "install -m 0644 " + quote(stage_ + "/ca.pem") + " /etc/amlnode/ca.pem";
    }
    auto ran = as_root("install", command);
    return ran.ok() ? ok() : Result<void>(ran.error());
  }

  Result<void> start() {
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
    while (Clock::now() < give_up) {
      auto node = control_plane_.node_of_token(token_);
      if (!node.ok()) return step_error(verb_, "register", node.error());
      // A node attached before keeps its identity and spends no token: its heartbeat is enough.
      if (*node || !previous_node_.empty()) {
        report_.node_id = *node ? **node : previous_node_;
        if (*node || agent_running()) return ok();
      }
      std::this_thread::sleep_for(delay);
      delay = std::min(delay * 2, std::chrono::milliseconds(500));
    }
    std::string log;
    auto tail = session_->run(sudo_ + (facts_.systemd
                                           ? std::string("journalctl -u amlnode -n 20 --no-pager")
                                           : std::string("tail -n 20 ") + kAgentLog));
    if (tail.ok()) log = tail->output;
    return Error{kRegistrationTimedOut, "attach: register: the node did not register within " +
                                            std::to_string(request_.timeout.count()) +
                                            " s; its log ends:\n" + log};
  }

  bool agent_running() {
    if (facts_.systemd) {
      auto ran = session_->run(sudo_ + "systemctl is-active --quiet amlnode");
      return ran.ok() && ran->exit_code == 0;
    }
    auto ran = session_->run(sudo_ + std::string("sh -c 'kill -0 \"$(cat ") + kPidFile + ")\"'");
    return ran.ok() && ran->exit_code == 0;
  }

  Result<void> record_attachment() {
    nlohmann::json attached = {{"compute", request_.compute},
                               {"control_plane", control_plane_.url},
                               {"kind", request_.kind},
                               {"node_id", report_.node_id},
                               {"version", request_.agent.version}};
    if (auto sent = session_->write_file(stage_ + "/attached.json", attached.dump(2) + "\n", 0644);
        !sent.ok())
      return step_error(verb_, "record", sent.error());
    auto ran = as_root("record",
                       "install -m 0644 " + quote(stage_ + "/attached.json") + " " + kAttachedFile);
    return ran.ok() ? ok() : Result<void>(ran.error());
  }

  const AttachRequest& request_;
  const AttachControlPlane& control_plane_;
  AttachReport report_;
  std::string stage_;
  std::string token_;
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
    if (auto r = timed(report_.steps, "probe", [&] { return probe(); }); !r.ok()) return r.error();
    if (auto r = timed(report_.steps, "attached", [&] { return find_node(); }); !r.ok())
      return r.error();
    if (auto r = timed(report_.steps, "drain", [&] { return drain(); }); !r.ok()) return r.error();
    if (auto r = timed(report_.steps, "stop", [&] { return stop_agent("stop"); }); !r.ok())
      return r.error();
    if (auto r = timed(report_.steps, "remove", [&] { return remove(); }); !r.ok())
      return r.error();
    if (in_control_plane_) {
      if (auto r = control_plane_.remove_node(report_.node_id); !r.ok())
        return step_error(verb_, "deregister", r.error());
    }
    return report_;
  }

 private:
  Result<void> find_node() {
    auto found = attachment();
    if (!found.ok()) return found.error();
    if (!found->is_object())
      return Error{kNotAttached,
                   "detach: attached: " + request_.host + " has no agent attach installed"};
    std::string compute = found->value("compute", "");
    if (compute != request_.compute)
      return Error{kNotAttached, "detach: attached: " + request_.host + " is attached to compute " +
                                     compute + ", not " + request_.compute};
    report_.node_id = found->value("node_id", "");
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
                          "rm -rf /usr/local/share/amlnode && " + sudo_ +
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
};

}  // namespace

Result<DetachReport> detach(const DetachRequest& request, const DetachControlPlane& control_plane) {
  return Detachment(request, control_plane).run();
}

Result<AttachReport> attach(const AttachRequest& request, const AttachControlPlane& control_plane) {
  return Attachment(request, control_plane).run();
}

}  // namespace amlnode::remote
