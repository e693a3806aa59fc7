#pragma once

// `amlnode controlplane` and the standalone `amlnode-controlplane`: flags, start, serve until
// SIGINT or SIGTERM, stop.

#include <memory>

namespace CLI {
class App;
}

namespace amlnode::controlplane {

// The flags of the control plane command, for embedding as a CLI11 subcommand:
//   ControlPlaneCommand command;  command.add_to(*app.add_subcommand("controlplane", "..."));
//   ... after parsing: return command.run();
class ControlPlaneCommand {
 public:
  ControlPlaneCommand();
  ~ControlPlaneCommand();
  void add_to(CLI::App& command);
  // Serves until SIGINT or SIGTERM; 0 after a clean stop, 1 when it could not start.
  int run();

 private:
  struct Flags;
  std::unique_ptr<Flags> flags_;
};

// A whole program: parses argv (argv[0] is the program name) and runs. Exit codes: 0 clean stop,
// 1 could not start, 2 usage error.
int controlplane_main(int argc, char** argv);

}  // namespace amlnode::controlplane
