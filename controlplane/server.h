#pragma once

// The reference control plane server (docs/protocol.md, docs/controlplane.md): HTTP/1.1 + JSON,
// TLS optional, state in SQLite and files under one data directory.
//
//   ControlPlaneServer server(options);
//   if (auto started = server.start(); !started) ...;
//   ... server.port(), server.user_token() ...
//   server.stop();
//
// One io thread owns all state; SQLite commits run on a writer thread and uploads are synced on a
// file thread, both posting their results back to the io thread.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "common/result.h"
#include "controlplane/options.h"

namespace amlnode::controlplane {

class ControlPlaneServer {
 public:
  explicit ControlPlaneServer(ServerOptions options);
  ~ControlPlaneServer();  // stops
  ControlPlaneServer(const ControlPlaneServer&) = delete;
  ControlPlaneServer& operator=(const ControlPlaneServer&) = delete;

  // Opens the data dir and its database, loads the state and starts serving. Call once.
  Result<void> start();

  // The port it listens on (the chosen one when options.port was 0). Valid after start().
  std::uint16_t port() const;

  // The user token in force, and the file it was read from or written to ("" when it was given).
  const std::string& user_token() const;
  const std::filesystem::path& user_token_file() const;

  // Closes every connection, finishes pending writes and joins the threads. Idempotent.
  void stop();

  // Runs one lost-node sweep now and returns once its changes are stored and the long polls it
  // affects are answered. For tests that move a manual clock instead of waiting.
  void sweep_now();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace amlnode::controlplane
