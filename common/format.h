#pragma once

// Numbers as people read them in logs and command output.

#include <string>

namespace amlnode {

// Binary multiples with one decimal: "512 B", "1.5 KiB", "3.2 GiB" (up to TiB).
std::string human_bytes(double bytes);

}  // namespace amlnode
