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

Error step_error(const std::string& step, const Error& cause) {
  return Error{cause.code, "attach: " + step + ": " + cause.message};
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

class Attachment {
 public:
  Attachment(const AttachRequest& request, const AttachControlPlane& control_plane)
      : request_(request), control_plane_(control_plane) {}

  Result<AttachReport> run() {
    if (auto r = timed("connect", [&] { return login(); }); !r.ok()) return r.error();
    if (auto r = timed("probe", [&] { return probe(); }); !r.ok()) return r.error();
    if (auto r = timed("attached", [&] { return check_attached(); }); !r.ok()) return r.error();
    if (auto r = timed("upload", [&] { return upload(); }); !r.ok()) return r.error();
    if (auto r = timed("install", [&] { return install(); }); !r.ok()) return r.error();
    if (auto r = timed("start", [&] { return start(); }); !r.ok()) return r.error();
    if (auto r = timed("register", [&] { return wait_registered(); }); !r.ok()) return r.error();
    if (auto r = record_attachment(); !r.ok()) return r.error();
    session_->run("rm -rf " + quote(stage_));
    return report_;
  }

 private:
  template <class Step>
  Result<void> timed(const std::string& name, Step step) {
    auto begin = Clock::now();
    Result<void> outcome = step();
    report_.steps.push_back({name, std::chrono::duration<double>(Clock::now() - begin).count()});
    return outcome;
  }

  // Runs a command as root (sudo -n unless the user is root); its failure names the step.
  Result<CommandResult> as_root(const std::string& step, const std::string& command,
                                const std::string& input = "") {
    auto ran = session_->run(sudo_ + command, input);
    if (!ran.ok()) return step_error(step, ran.error());
    if (ran->exit_code != 0)
      return Error{kCommandFailed, "attach: " + step + ": exit " + std::to_string(ran->exit_code) +
                                       ": " + ran->output.substr(0, 4000)};
    return ran;
  }

  Result<void> login() {
    auto session = connect_ssh(request_.host, request_.port, std::chrono::seconds(15));
    if (!session.ok()) return step_error("connect", session.error());
    session_ = std::move(*session);
    auto verified = session_->verify_host_key(request_.host_key);
    if (!verified.ok()) return step_error("host key", verified.error());
    report_.host_key_recorded = *verified;
    if (auto in = session_->authenticate(request_.credentials); !in.ok())
      return step_error("login", in.error());
    return ok();
  }

  Result<void> probe() {
    auto ran = session_->run("/bin/sh -s", probe_script());
    if (!ran.ok()) return step_error("probe", ran.error());
    auto facts = parse_probe(ran->output);
    if (!facts.ok()) return step_error("probe", facts.error());
    if (auto fits = check_host(*facts, request_.local_arch); !fits.ok())
      return step_error("probe", fits.error());
    report_.facts = *facts;
    report_.previous_version = facts->agent_version;
    sudo_ = facts->root ? "" : "sudo -n ";
    return ok();
  }

  // A host attached to another compute is refused; to this one, it is repaired or upgraded.
  Result<void> check_attached() {
    auto ran = session_->run(sudo_ + "cat " + kAttachedFile + " 2>/dev/null");
    if (!ran.ok()) return step_error("attached", ran.error());
    if (ran->exit_code != 0) return ok();
    auto attached = nlohmann::json::parse(ran->output, nullptr, false);
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
        return step_error("upload", sent.error());
    }
    for (const char* name : kSystemdFiles) {
      if (auto sent = session_->upload(request_.agent.systemd_dir / name,
                                       stage_ + "/systemd/" + name, 0755);
          !sent.ok())
        return step_error("upload", sent.error());
    }
    for (const auto& file : python) {
      auto relative = file.lexically_relative(request_.agent.python_dir).generic_string();
      if (auto sent = session_->upload(file, stage_ + "/share/amlnode/python/" + relative, 0644);
          !sent.ok())
        return step_error("upload", sent.error());
    }
    auto token = control_plane_.create_token(request_.compute);
    if (!token.ok()) return step_error("registration token", token.error());
    token_ = *token;
    // The token goes in a file of its own, over SFTP: never on a command line or in a shell.
    if (auto sent = session_->write_file(stage_ + "/registration_token", token_, 0600); !sent.ok())
      return step_error("upload", sent.error());
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
        quote(stage_ + "/share/amlnode/python") + " /usr/local/share/amlnode/";
    if (!control_plane_.ca_file.empty()) {
      if (auto sent = session_->upload(control_plane_.ca_file, stage_ + "/ca.pem", 0644);
          !sent.ok())
        return step_error("install", sent.error());
      command +=
          " && " + sudo_ + "install -m 0644 " + quote(stage_ + "/ca.pem") + " /etc/amlnode/ca.pem";
    }
    auto ran = as_root("install", command);
    return ran.ok() ? ok() : Result<void>(ran.error());
  }

  Result<void> start() {
    if (report_.facts.systemd) {
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
      if (!node.ok()) return step_error("register", node.error());
      // A node attached before keeps its identity and spends no token: its heartbeat is enough.
      if (*node || !previous_node_.empty()) {
        report_.node_id = *node ? **node : previous_node_;
        if (*node || agent_running()) return ok();
      }
      std::this_thread::sleep_for(delay);
      delay = std::min(delay * 2, std::chrono::milliseconds(500));
    }
    std::string log;
    auto tail = session_->run(sudo_ + (report_.facts.systemd
                                           ? std::string("journalctl -u amlnode -n 20 --no-pager")
                                           : std::string("tail -n 20 ") + kAgentLog));
    if (tail.ok()) log = tail->output;
    return Error{kRegistrationTimedOut, "attach: register: the node did not register within " +
                                            std::to_string(request_.timeout.count()) +
                                            " s; its log ends:\n" + log};
  }

  bool agent_running() {
    if (report_.facts.systemd) {
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
      return step_error("record", sent.error());
    auto ran = as_root("record",
                       "install -m 0644 " + quote(stage_ + "/attached.json") + " " + kAttachedFile);
    return ran.ok() ? ok() : Result<void>(ran.error());
  }

  const AttachRequest& request_;
  const AttachControlPlane& control_plane_;
  std::unique_ptr<SshSession> session_;
  AttachReport report_;
  std::string sudo_;
  std::string stage_;
  std::string token_;
  std::string previous_node_;
};

}  // namespace

Result<AttachReport> attach(const AttachRequest& request, const AttachControlPlane& control_plane) {
  return Attachment(request, control_plane).run();
}

}  // namespace amlnode::remote
