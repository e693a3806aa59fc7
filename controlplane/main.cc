#include <cstdio>
#include <exception>

#include "controlplane/cli.h"

// The program's edge: anything unexpected that escapes is reported, never a crash dump.
int main(int argc, char** argv) {
  try {
    return amlnode::controlplane::controlplane_main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "amlnode-controlplane: internal error: %s\n", e.what());
    return 125;
  }
}
