#include <cstdio>
#include <exception>

#include "agent/cli.h"

// The program's edge: anything unexpected that escapes is reported, never a crash dump.
int main(int argc, char** argv) {
  try {
    return amlnode::agent::run_cli(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "amlnode: internal error: %s\n", e.what());
    return 125;
  }
}
