#pragma once

// The real amlnode-controlplane executable as a separate process on loopback, for the daemon's
// integration tests. It keeps its data directory and port across restarts, so a test can stop or
// SIGKILL it and start it again the way an operator would.

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agent/daemon/http_client.h"

namespace amlnode::test {

class ControlPlaneProcess {
 public:
  explicit ControlPlaneProcess(std::filesystem::path data_dir,
                               std::vector<std::string> extra_args = {});
  ~ControlPlaneProcess();  // SIGKILLs it if still running

  void start();  // the first start picks a free port; later ones reuse it
  void stop();   // SIGTERM and wait
  void kill();   // SIGKILL and wait
  bool running() const { return pid_ > 0; }

  std::uint16_t port() const { return port_; }
  // https:// when the extra arguments give it --tls-cert (the certificate then also serves as the
  // CA its clients here trust).
  std::string url() const {
    return std::string(tls_cert_.empty() ? "http" : "https") +
           "://127.0.0.1:" + std::to_string(port_);
  }
  const std::filesystem::path& tls_cert() const { return tls_cert_; }
  const std::string& user_token() const { return user_token_; }

  // A user-token call; fails the test when it cannot be made. Returns the status and the JSON body.
  std::pair<int, nlohmann::json> user_call(const std::string& method, const std::string& target,
                                           const nlohmann::json& body = nullptr);
  // Submits a job with the snapshot of `source_dir`; returns the run id once it is Queued.
  std::string submit(const std::string& job_text, const std::filesystem::path& source_dir,
                     const std::string& compute_name, const std::string& experiment = "exp");
  // The run record, GET /v1/runs/{id}.
  nlohmann::json run(const std::string& run_id);
  // The same, for polling: nullopt when the call did not get an answer (its error is kept in
  // last_error()), so a poll goes on instead of failing the test at the first dropped call.
  std::optional<nlohmann::json> try_run(const std::string& run_id);
  const std::string& last_error() const { return last_error_; }
  // The whole of one log stream as the control plane holds it.
  std::string log(const std::string& run_id, const std::string& stream);
  // The run's outputs tar.gz as the control plane holds it ("" when it has none).
  std::string outputs(const std::string& run_id);
  // A fresh single-use registration token bound to `compute_name`.
  std::string registration_token(const std::string& compute_name);

 private:
  std::filesystem::path data_dir_;
  std::vector<std::string> extra_args_;
  std::filesystem::path tls_cert_;
  std::string user_token_ = "test-user-token";
  std::string last_error_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
  int starts_ = 0;
  std::unique_ptr<agent::HttpClient> http_;
};

// The amlnode-controlplane binary under test.
std::filesystem::path controlplane_binary();

}  // namespace amlnode::test
