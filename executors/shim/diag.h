#pragma once

// The shim's own diagnostics: one timestamped line per event on stderr, which the launcher points
// at the shim's log file. printf-style into a fixed buffer and one write(2), so a line is never
// split and no stdio buffer is kept.

namespace amlnode::executors::shim {

[[gnu::format(printf, 1, 2)]] void say(const char* format, ...);

}  // namespace amlnode::executors::shim
