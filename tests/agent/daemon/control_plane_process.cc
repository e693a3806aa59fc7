#include "tests/agent/daemon/control_plane_process.h"

#include <signal.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <regex>

#include "executors/archive.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace amlnode::test {

std::filesystem::path controlplane_binary() {
  return std::filesystem::path(AMLNODE_BINARY_DIR) / "bin" / "amlnode-controlplane";
}

ControlPlaneProcess::ControlPlaneProcess(std::filesystem::path data_dir,
                                         std::vector<std::string> extra_args)
    : data_dir_(std::move(data_dir)), extra_args_(std::move(extra_args)) {
  for (std::size_t i = 0; i + 1 < extra_args_.size(); ++i) {
    if (extra_args_[i] == "--tls-cert") tls_cert_ = extra_args_[i + 1];
  }
}

ControlPlaneProcess::~ControlPlaneProcess() {
  if (pid_ > 0) kill();
}

void ControlPlaneProcess::start() {
  REQUIRE(pid_ <= 0);
  std::filesystem::create_directories(data_dir_);
  auto out = data_dir_ / ("stdout." + std::to_string(starts_));
  auto err = data_dir_ / ("stderr." + std::to_string(++starts_));
  std::vector<std::string> argv{controlplane_binary().string(),
                                "--listen",
                                "127.0.0.1:" + std::to_string(port_),
                                "--data-dir",
                                data_dir_.string(),
                                "--user-token",
                                user_token_};
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
  pid_ = start_command(argv, out, err);
  static const std::regex listening("listening on https?://127\\.0\\.0\\.1:([0-9]+)");
  std::string port;
  bool up = eventually(
      [&] {
        std::error_code ec;
        if (!std::filesystem::exists(out, ec)) return false;
        std::string text = slurp(out);
        std::smatch match;
        if (!std::regex_search(text, match, listening)) return false;
        port = match[1].str();
        return true;
      },
      std::chrono::seconds(20));
  INFO(slurp(err));
  REQUIRE(up);
  port_ = static_cast<std::uint16_t>(std::stoi(port));
  agent::HttpTlsOptions tls;
  if (!tls_cert_.empty()) tls.ca_file = tls_cert_;
  http_ = agent::make_http_client(*agent::parse_http_url(url()), tls);
}

void ControlPlaneProcess::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  wait_command(pid_, std::chrono::seconds(20));
  pid_ = -1;
}

void ControlPlaneProcess::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  wait_command(pid_, std::chrono::seconds(20));
  pid_ = -1;
}

std::optional<nlohmann::json> ControlPlaneProcess::try_run(const std::string& run_id) {
  agent::HttpRequest request;
  request.target = "/v1/runs/" + run_id;
  request.bearer_token = user_token_;
  auto response = http_->send(request);
  if (!response.ok()) {
    last_error_ = response.error().message;
    return std::nullopt;
  }
  if (response->status != 200) {
    last_error_ = "status " + std::to_string(response->status) + ": " + response->body;
    return std::nullopt;
  }
  auto body = nlohmann::json::parse(response->body, nullptr, false);
  if (body.is_discarded()) return std::nullopt;
  return body;
}

std::pair<int, nlohmann::json> ControlPlaneProcess::user_call(const std::string& method,
                                                              const std::string& target,
                                                              const nlohmann::json& body) {
  agent::HttpRequest request;
  request.method = method;
  request.target = target;
  request.bearer_token = user_token_;
  if (!body.is_null()) {
    request.content_type = "application/json";
    request.body = body.dump();
  }
  auto response = http_->send(request);
  INFO(method << " " << target);
  REQUIRE(response.ok());
  return {response->status, nlohmann::json::parse(response->body, nullptr, false)};
}

std::string ControlPlaneProcess::submit(const std::string& job_text,
                                        const std::filesystem::path& source_dir,
                                        const std::string& compute_name,
                                        const std::string& experiment) {
  auto [status, created] = user_call("POST", "/v1/runs",
                                     {{"job", {{"text", job_text}, {"file_name", "job.yml"}}},
                                      {"experiment_name", experiment},
                                      {"compute_name", compute_name}});
  INFO(created.dump());
  REQUIRE(status == 201);
  std::string run_id = created["run_id"];
  auto listing = executors::list_snapshot(source_dir, {});
  REQUIRE(listing.ok());
  auto packed = executors::pack_snapshot_to_memory(source_dir, *listing, 300 << 20);
  REQUIRE(packed.ok());
  agent::HttpRequest request;
  request.method = "PUT";
  request.target = "/v1/runs/" + run_id + "/snapshot";
  request.bearer_token = user_token_;
  request.content_type = "application/gzip";
  request.body = packed->data;
  auto response = http_->send(request);
  REQUIRE(response.ok());
  INFO(response->body);
  REQUIRE(response->status == 200);
  return run_id;
}

nlohmann::json ControlPlaneProcess::run(const std::string& run_id) {
  auto [status, body] = user_call("GET", "/v1/runs/" + run_id);
  REQUIRE(status == 200);
  return body;
}

std::string ControlPlaneProcess::log(const std::string& run_id, const std::string& stream) {
  std::string all;
  for (;;) {
    agent::HttpRequest request;
    request.target =
        "/v1/runs/" + run_id + "/logs/" + stream + "?offset=" + std::to_string(all.size());
    request.bearer_token = user_token_;
    auto response = http_->send(request);
    REQUIRE(response.ok());
    if (response->status != 200 || response->body.empty()) return all;
    all += response->body;
  }
}

std::string ControlPlaneProcess::outputs(const std::string& run_id) {
  agent::HttpRequest request;
  request.target = "/v1/runs/" + run_id + "/outputs";
  request.bearer_token = user_token_;
  request.max_response_bytes = 300u << 20;
  auto response = http_->send(request);
  REQUIRE(response.ok());
  return response->status == 200 ? response->body : std::string();
}

std::string ControlPlaneProcess::registration_token(const std::string& compute_name) {
  auto [status, body] =
      user_call("POST", "/v1/registration-tokens", {{"compute_name", compute_name}});
  REQUIRE(status == 201);
  return body["token"].get<std::string>();
}

}  // namespace amlnode::test
