#include "agent/attach_command.h"

#include <sys/utsname.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agent/user_client.h"
#include "common/json.h"
#include "metrics/python_module.h"
#include "remote/attach.h"

namespace amlnode::agent {
namespace fs = std::filesystem;

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr std::size_t kMaxSecretBytes = 64 << 10;

// A secret from a file, its trailing newline dropped.
Result<std::string> read_secret(const std::string& file, const char* what) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Error{"Usage", std::string(what) + ": cannot read " + file};
  std::string text(kMaxSecretBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > kMaxSecretBytes) return Error{"Usage", std::string(what) + ": too long"};
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

std::string machine_arch() {
  utsname name{};
  return ::uname(&name) == 0 ? name.machine : "";
}

}  // namespace

struct AttachCommand::State {
  CLI::App* command = nullptr;
  CLI::App* detach_command = nullptr;
  bool purge = false;
  UserAccess access;
  bool as_json = false;
  std::string host;
  std::string compute;
  int port = 22;
  std::string username;
  std::string password_file;
  std::string private_key_file;
  std::string passphrase_file;
  std::string kind = "remote";
  std::string known_hosts;
  std::string host_key;
  bool accept_new = false;
  int timeout = 120;

  Result<remote::AttachRequest> request() const {
    remote::AttachRequest out;
    out.host = host;
    out.port = port;
    out.compute = compute;
    out.kind = kind;
    out.timeout = std::chrono::seconds(timeout);
    out.local_arch = machine_arch();
    out.credentials.username = username;
    if (password_file.empty() == private_key_file.empty())
      return Error{"Usage", "give one of --password-file and --private-key-file"};
    if (!password_file.empty()) {
      auto password = read_secret(password_file, "--password-file");
      if (!password.ok()) return password.error();
      out.credentials.password = *password;
    } else {
      out.credentials.private_key = fs::path(private_key_file);
      if (!passphrase_file.empty()) {
        auto passphrase = read_secret(passphrase_file, "--passphrase-file");
        if (!passphrase.ok()) return passphrase.error();
        out.credentials.passphrase = *passphrase;
      }
    }
    const char* home = std::getenv("HOME");
    out.host_key.known_hosts = !known_hosts.empty()
                                   ? fs::path(known_hosts)
                                   : fs::path(home ? home : "/root") / ".ssh" / "known_hosts";
    if (!host_key.empty()) out.host_key.fingerprint = host_key;
    out.host_key.accept_new = accept_new;
    std::error_code ec;
    fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    out.agent.bin_dir = exe.parent_path();
    out.agent.systemd_dir = exe.parent_path().parent_path() / "share" / "amlnode" / "systemd";
    auto python = metrics::python_module_dir();
    if (!python || !fs::exists(out.agent.systemd_dir / "install.sh", ec))
      return Error{"Usage", "this agent's Python module or install script is missing beside " +
                                exe.string() + " (share/amlnode/python, share/amlnode/systemd)"};
    out.agent.python_dir = *python;
    out.agent.version = "amlnode 0.1.0";
    return out;
  }

  // The node attach recorded on the host: drained, stopped, removed, forgotten.
  int run_detach() {
    auto attach_request = this->request();
    if (!attach_request.ok()) return fail(attach_request.error(), kExitUsage);
    remote::DetachRequest request;
    request.host = attach_request->host;
    request.port = attach_request->port;
    request.credentials = attach_request->credentials;
    request.host_key = attach_request->host_key;
    request.compute = compute;
    request.control_plane_url = control_plane_url();
    request.local_arch = attach_request->local_arch;
    request.purge = purge;
    request.timeout = std::chrono::seconds(timeout);
    auto client = make_user_client(access);
    if (!client.ok()) return fail(client.error(), kExitUsage);
    auto shared = std::make_shared<UserClient>(std::move(*client));
    remote::DetachControlPlane control_plane;
    control_plane.drain = [shared](const std::string& node) -> Result<bool> {
      auto answer = shared->call("POST", "/v1/nodes/" + node + "/drain", "{}");
      if (!answer.ok()) return answer.error();
      if (answer->status == 404) return false;
      if (answer->status != 200)
        return Error{"ControlPlaneRefused", "draining: HTTP " + std::to_string(answer->status)};
      return true;
    };
    control_plane.holds_runs = [shared](const std::string& node) -> Result<bool> {
      auto answer = shared->call("GET", "/v1/nodes");
      if (!answer.ok()) return answer.error();
      auto nodes = parse_untrusted_json(answer->body);
      if (answer->status != 200 || !nodes.is_array())
        return Error{"ControlPlaneRefused",
                     "listing the nodes: HTTP " + std::to_string(answer->status)};
      for (const auto& listed : nodes)
        if (listed.is_object() && listed.value("nodeId", "") == node)
          return listed.contains("runId") && !listed["runId"].is_null();
      return false;
    };
    control_plane.remove_node = [shared](const std::string& node) -> Result<void> {
      auto answer = shared->call("DELETE", "/v1/nodes/" + node);
      if (!answer.ok()) return answer.error();
      if (answer->status != 200 && answer->status != 404)
        return Error{"ControlPlaneRefused", "removing the node: HTTP " +
                                                std::to_string(answer->status) + " " +
                                                answer->body.substr(0, 500)};
      return ok();
    };
    auto report = remote::detach(request, control_plane);
    if (!report.ok()) return fail(report.error(), kExitFailed);
    if (as_json) {
      nlohmann::json steps = nlohmann::json::array();
      for (const auto& step : report->steps)
        steps.push_back({{"step", step.name}, {"seconds", step.seconds}});
      std::printf(
          "%s\n",
          nlohmann::json{
              {"node_id", report->node_id}, {"host", host}, {"purged", purge}, {"steps", steps}}
              .dump()
              .c_str());
    } else {
      std::printf("%s\n", report->node_id.c_str());
    }
    return 0;
  }

  int run() {
    auto request = this->request();
    if (!request.ok()) return fail(request.error(), kExitUsage);
    auto client = make_user_client(access);
    if (!client.ok()) return fail(client.error(), kExitUsage);
    auto shared = std::make_shared<UserClient>(std::move(*client));
    remote::AttachControlPlane control_plane;
    control_plane.url = control_plane_url();
    control_plane.ca_file = access.ca_file;
    control_plane.create_token = [shared](const std::string& name) -> Result<std::string> {
      auto answer = shared->call("POST", "/v1/registration-tokens",
                                 nlohmann::json{{"compute_name", name}}.dump());
      if (!answer.ok()) return answer.error();
      auto body = parse_untrusted_json(answer->body);
      if (answer->status != 201 || !body.is_object() || !body["token"].is_string())
        return Error{"ControlPlaneRefused", "making a registration token: HTTP " +
                                                std::to_string(answer->status) + " " +
                                                answer->body.substr(0, 500)};
      return body["token"].get<std::string>();
    };
    control_plane.node_known = [shared](const std::string& node) -> Result<bool> {
      auto answer = shared->call("GET", "/v1/nodes/" + node);
      if (!answer.ok()) return answer.error();
      if (answer->status == 404) return false;
      if (answer->status != 200)
        return Error{"ControlPlaneRefused",
                     "asking about node " + node + ": HTTP " + std::to_string(answer->status)};
      return true;
    };
    control_plane.node_of_token =
        [shared](const std::string& token) -> Result<std::optional<std::string>> {
      auto answer = shared->call("POST", "/v1/registration-tokens/lookup",
                                 nlohmann::json{{"token", token}}.dump());
      if (!answer.ok()) return answer.error();
      auto body = parse_untrusted_json(answer->body);
      if (answer->status != 200 || !body.is_object())
        return Error{"ControlPlaneRefused",
                     "asking about the registration token: HTTP " + std::to_string(answer->status)};
      if (!body["node_id"].is_string()) return std::optional<std::string>();
      return std::optional<std::string>(body["node_id"].get<std::string>());
    };
    auto report = remote::attach(*request, control_plane);
    if (!report.ok()) return fail(report.error(), kExitFailed);
    print(*report);
    return 0;
  }

  void print(const remote::AttachReport& report) const {
    if (as_json) {
      nlohmann::json steps = nlohmann::json::array();
      for (const auto& step : report.steps)
        steps.push_back({{"step", step.name}, {"seconds", step.seconds}});
      nlohmann::json out = {{"node_id", report.node_id},
                            {"host", host},
                            {"compute", compute},
                            {"os", report.facts.os_name},
                            {"arch", report.facts.arch},
                            {"docker", report.facts.docker},
                            {"conda", report.facts.conda},
                            {"systemd", report.facts.systemd},
                            {"previous_version", report.previous_version},
                            {"host_key_recorded", report.host_key_recorded},
                            {"started", report.started},
                            {"steps", steps}};
      std::printf("%s\n", out.dump().c_str());
      return;
    }
    std::fprintf(stderr, "amlnode: %s: %s, %s; docker %s, conda %s\n", host.c_str(),
                 report.facts.os_name.c_str(), report.facts.arch.c_str(),
                 report.facts.docker.empty() ? "absent" : report.facts.docker.c_str(),
                 report.facts.conda.empty() ? "absent" : report.facts.conda.c_str());
    if (!report.previous_version.empty())
      std::fprintf(stderr, "amlnode: replaced %s\n", report.previous_version.c_str());
    std::fprintf(stderr, "amlnode: %s\n", report.started.c_str());
    std::printf("%s\n", report.node_id.c_str());
  }

  void add_options(CLI::App* c);

  // The control plane as the user gave it (else $AMLNODE_CONTROL_PLANE): what the node's config
  // points at and what the host's attachment names.
  std::string control_plane_url() const {
    if (!access.control_plane.empty()) return access.control_plane;
    const char* url = std::getenv("AMLNODE_CONTROL_PLANE");
    return url ? url : "";
  }

  static int fail(const Error& error, int code) {
    std::fprintf(stderr, "amlnode: %s\n", error.message.c_str());
    return code;
  }
};

AttachCommand::AttachCommand() : state_(std::make_unique<State>()) {}
AttachCommand::~AttachCommand() = default;

void AttachCommand::add_to(CLI::App& app) {
  State& s = *state_;
  s.command = app.add_subcommand(
      "attach", "Install this agent on a host over SSH and register it as a node of a compute");
  s.detach_command = app.add_subcommand(
      "detach",
      "Drain an attached host's node, stop and remove its agent, and remove the node; the host "
      "itself is left as it was");
  s.detach_command->add_flag("--purge", s.purge,
                             "also remove the agent's state (runs, environments) and its user");
  for (auto* c : {s.command, s.detach_command}) s.add_options(c);
}

void AttachCommand::State::add_options(CLI::App* c) {
  State& s = *this;
  c->add_option("HOST", s.host, "the host")->required();
  c->add_option("--compute", s.compute, "the compute it is a node of")->required();
  c->add_option("--port", s.port, "its SSH port")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  c->add_option("--username", s.username, "the user to log in as (root or password-less sudo)")
      ->required();
  c->add_option("--password-file", s.password_file, "a file holding the password");
  c->add_option("--private-key-file", s.private_key_file, "the private key to log in with");
  c->add_option("--passphrase-file", s.passphrase_file, "a file holding the key's passphrase");
  c->add_option("--kind", s.kind, "remote or hdinsight")
      ->capture_default_str()
      ->check(CLI::IsMember({"remote", "hdinsight"}));
  c->add_option("--known-hosts", s.known_hosts, "known hosts file (default ~/.ssh/known_hosts)");
  c->add_option("--host-key", s.host_key,
                "the host key's SHA256:... fingerprint, for a host not yet known");
  c->add_flag("--accept-new-host-key", s.accept_new,
              "accept and record an unknown host's key (a changed key is always refused)");
  c->add_option("--timeout", s.timeout,
                "seconds to wait for the node to register (attach) or its runs to end (detach)")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  c->add_option("--control-plane", s.access.control_plane,
                "control plane URL (default: $AMLNODE_CONTROL_PLANE)");
  c->add_option("--user-token", s.access.user_token, "user token (default: $AMLNODE_USER_TOKEN)");
  c->add_option("--user-token-file", s.access.user_token_file, "file holding the user token");
  c->add_option("--ca-file", s.access.ca_file, "PEM CA certificate of an https:// control plane");
  c->add_flag("--json", s.as_json, "print the outcome as JSON");
}

int AttachCommand::run() {
  if (state_->detach_command && *state_->detach_command) return state_->run_detach();
  if (!state_->command || !*state_->command) return -1;
  return state_->run();
}

}  // namespace amlnode::agent
