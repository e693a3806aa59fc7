#pragma once

// A real control plane server on a loopback port with its data in a temporary directory, a manual
// clock for heartbeat timeouts, and a node-side client for brevity in tests.

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "common/clock.h"
#include "controlplane/options.h"
#include "controlplane/server.h"
#include "tests/controlplane/http_client.h"
#include "tests/support/temp_dir.h"

namespace amlnode::controlplane::test {

// Time that moves only when a test says so.
class ManualClock final : public Clock {
 public:
  ManualClock() : millis_(1'800'000'000'000) {}
  std::chrono::system_clock::time_point now() const override {
    return std::chrono::system_clock::time_point(std::chrono::milliseconds(millis_.load()));
  }
  void advance(std::chrono::milliseconds by) { millis_ += by.count(); }

 private:
  std::atomic<long long> millis_;
};

struct NodeCredentials {
  std::string id;
  std::string token;
};

// The node's side of the protocol.
class NodeClient {
 public:
  NodeClient(std::uint16_t port, NodeCredentials credentials, bool tls = false)
      : credentials_(std::move(credentials)), http_(port, tls) {}

  const std::string& id() const { return credentials_.id; }
  const std::string& token() const { return credentials_.token; }
  HttpClient& http() { return http_; }

  HttpResponse heartbeat(const nlohmann::json& body = {{"state", "idle"}});
  HttpResponse lease(int max_runs = 1, double wait_seconds = 0);
  HttpResponse status(const std::string& run_id, std::int64_t epoch, const std::string& status,
                      const nlohmann::json& extra = nlohmann::json::object());
  HttpResponse append(const std::string& run_id, const std::string& stream, std::uint64_t offset,
                      std::int64_t epoch, const std::string& bytes);

 private:
  NodeCredentials credentials_;
  HttpClient http_;
};

class TestServer {
 public:
  // `tweak` adjusts the options before the server starts (and on every restart).
  explicit TestServer(std::function<void(ServerOptions&)> tweak = {});
  ~TestServer();

  void stop();
  void restart();  // stop, then start again on the same data dir

  std::uint16_t port() const { return server_->port(); }
  const std::string& user_token() const { return server_->user_token(); }
  ControlPlaneServer& server() { return *server_; }
  ManualClock& clock() { return *clock_; }
  const std::filesystem::path& data_dir() const { return dir_.path(); }
  HttpClient& user() { return *user_; }

  std::string make_registration_token(const std::string& compute = "");
  NodeCredentials register_node(const std::string& compute, const std::string& hostname = "node");
  NodeClient node(const std::string& compute, const std::string& hostname = "node");
  // Submits a run (NotStarted) and returns its id.
  std::string submit_run(const std::string& compute, const std::string& experiment = "exp");
  // Submits a run and uploads its snapshot (Queued).
  std::string queue_run(const std::string& compute, const std::string& experiment = "exp");
  nlohmann::json run(const std::string& run_id);

 private:
  void start();

  amlnode::test::TempDir dir_;
  std::function<void(ServerOptions&)> tweak_;
  std::shared_ptr<ManualClock> clock_ = std::make_shared<ManualClock>();
  std::unique_ptr<ControlPlaneServer> server_;
  std::unique_ptr<HttpClient> user_;
};

// `target` with `value` percent-encoded where needed for a query string or path.
std::string url_encode(const std::string& value);

}  // namespace amlnode::controlplane::test
