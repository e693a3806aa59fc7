#include "controlplane/server.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <future>
#include <optional>
#include <thread>

#include "common/error_codes.h"
#include "common/fs.h"
#include "controlplane/api.h"
#include "controlplane/cluster.h"
#include "controlplane/http_server.h"
#include "controlplane/log_streams.h"
#include "controlplane/tokens.h"
#include "controlplane/worker.h"

namespace amlnode::controlplane {

namespace asio = boost::asio;

namespace {

std::string trimmed(std::string text) {
  auto end = text.find_last_not_of(" \t\r\n");
  text.erase(end == std::string::npos ? 0 : end + 1);
  return text.substr(std::min(text.size(), text.find_first_not_of(" \t\r\n")));
}

// The given token, else the one in <data_dir>/user_token, else a new one written there (0600).
Result<std::string> resolve_user_token(const ServerOptions& options, std::filesystem::path& file) {
  if (!options.user_token.empty()) return options.user_token;
  file = options.data_dir / "user_token";
  std::error_code ec;
  if (std::filesystem::exists(file, ec)) {
    auto text = read_file(file, 4096);
    if (!text) return text.error();
    auto token = trimmed(*text);
    if (token.empty()) return Error{"InvalidUserToken", file.string() + " is empty"};
    return token;
  }
  std::string token = random_token("amluser_");
  if (auto written = write_file_atomically(file, token + "\n", true, 0600); !written) {
    return written.error();
  }
  return token;
}

}  // namespace

struct ControlPlaneServer::Impl {
  explicit Impl(ServerOptions opts) : options(std::move(opts)), logs(options.data_dir / "runs") {
    if (!options.clock) options.clock = make_system_clock();
  }

  ~Impl() { stop(); }

  Result<void> start();
  void stop();
  void schedule_sweep();

  // Runs `fn` on the io thread and waits for it to call its `done` argument.
  void run_on_io_and_wait(std::function<void(std::function<void()> done)> fn) {
    std::promise<void> finished;
    asio::post(io, [&] { fn([&] { finished.set_value(); }); });
    finished.get_future().wait();
  }

  ServerOptions options;
  asio::io_context io;  // declared before everything bound to it, so destroyed after them
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::unique_ptr<Store> store;
  LogStreams logs;
  std::optional<Cluster> cluster;
  std::unique_ptr<Worker> store_writer;
  std::unique_ptr<Worker> file_worker;
  std::unique_ptr<Worker> hook_worker;
  std::unique_ptr<Api> api;
  std::unique_ptr<HttpServer> http;
  std::optional<asio::steady_timer> sweep_timer;
  std::thread thread;
  std::string user_token;
  std::filesystem::path user_token_file;
  std::uint16_t port = 0;
  bool running = false;
};

Result<void> ControlPlaneServer::Impl::start() {
  if (options.data_dir.empty()) return Error{"InvalidOptions", "a data dir is required"};
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir / "runs", ec);
  if (ec)
    return Error{errors::kStorageError,
                 "creating " + options.data_dir.string() + ": " + ec.message()};
  // The database holds token hashes only, but the user token file is a secret.
  ::chmod(options.data_dir.c_str(), 0700);

  auto token = resolve_user_token(options, user_token_file);
  if (!token) return token.error();
  user_token = *token;

  auto opened = open_sqlite_store((options.data_dir / "controlplane.db").string());
  if (!opened) return opened.error();
  store = std::move(*opened);
  auto contents = store->load();
  if (!contents) return contents.error();

  ClusterPolicy policy{options.heartbeat_interval, options.heartbeat_timeout,
                       options.requeue_delay};
  cluster.emplace(std::move(*contents), options.clock, policy, user_token);
  if (options.registration_token) cluster->ensure_registration_token(*options.registration_token);

  auto post_back = [this](std::function<void()> fn) { asio::post(io, std::move(fn)); };
  Store* db = store.get();
  store_writer = std::make_unique<Worker>(
      post_back, Worker::BatchHooks{[db] { return db->begin(); }, [db] { return db->commit(); },
                                    [db] { db->rollback(); }});
  file_worker = std::make_unique<Worker>(post_back);
  hook_worker = std::make_unique<Worker>(post_back);
  api = std::make_unique<Api>(ApiContext{io, *cluster, logs, *store, *store_writer, *file_worker,
                                         options.data_dir, options.limits, *hook_worker,
                                         options.scale_hook, options.scale_hook_timeout});
  http = std::make_unique<HttpServer>(io, *api, options);
  auto listening = http->listen();
  if (!listening) return listening.error();
  port = *listening;

  work.emplace(io.get_executor());
  thread = std::thread([this] { io.run(); });
  running = true;
  // Whatever start-up changed (a pre-created registration token) is stored before start returns.
  Result<void> stored;
  run_on_io_and_wait([&](std::function<void()> done) {
    api->commit_then([&, done](Result<void> result) {
      stored = result;
      done();
    });
  });
  if (!stored) return stored.error();
  asio::post(io, [this] {
    sweep_timer.emplace(io);
    schedule_sweep();
  });
  return ok();
}

void ControlPlaneServer::Impl::schedule_sweep() {
  sweep_timer->expires_after(options.sweep_interval);
  sweep_timer->async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    api->sweep([this] { schedule_sweep(); });
  });
}

void ControlPlaneServer::Impl::stop() {
  if (!running) return;
  running = false;
  run_on_io_and_wait([this](std::function<void()> done) {
    if (sweep_timer) sweep_timer->cancel();
    http->close();
    api->shutdown();
    done();
  });
  // Everything acknowledged is already committed; this finishes what was still on its way.
  store_writer->stop();
  file_worker->stop();
  hook_worker->stop();
  work.reset();
  io.stop();
  thread.join();
  sweep_timer.reset();
}

ControlPlaneServer::ControlPlaneServer(ServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

ControlPlaneServer::~ControlPlaneServer() = default;

Result<void> ControlPlaneServer::start() {
  return impl_->start();
}

std::uint16_t ControlPlaneServer::port() const {
  return impl_->port;
}

const std::string& ControlPlaneServer::user_token() const {
  return impl_->user_token;
}

const std::filesystem::path& ControlPlaneServer::user_token_file() const {
  return impl_->user_token_file;
}

void ControlPlaneServer::stop() {
  impl_->stop();
}

void ControlPlaneServer::sweep_now() {
  if (!impl_->running) return;
  impl_->run_on_io_and_wait([this](std::function<void()> done) { impl_->api->sweep(done); });
}

}  // namespace amlnode::controlplane
