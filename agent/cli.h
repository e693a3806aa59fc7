#pragma once

namespace amlnode::agent {

// The `amlnode` command line: parses argv and runs the chosen role. Returns the exit code.
int run_cli(int argc, char** argv);

}  // namespace amlnode::agent
