// Fuzzes the shim's three JSON files (executors/shim/protocol.h): the launch spec the shim reads,
// and the state and exit record it writes, which a restarted agent reads back from a run folder
// the job can write to. The first byte of the input picks the reader; the rest is the file.
//
// Beyond not crashing: whatever a reader accepts, its writer writes, and reading that back gives
// the same value. That is what makes the files safe to hand between processes and versions.

#include <cstdint>
#include <string>

#include "executors/shim/protocol.h"
#include "fuzz/fuzz_support.h"

namespace {

using namespace amlnode::executors;
using amlnode::fuzz::check;

bool same(const LaunchSpec& a, const LaunchSpec& b) {
  return a.argv == b.argv && a.env == b.env && a.cwd == b.cwd && a.log_path == b.log_path &&
         a.state_path == b.state_path && a.exit_path == b.exit_path &&
         a.deadline_seconds == b.deadline_seconds && a.kill_grace_seconds == b.kill_grace_seconds &&
         a.uid == b.uid && a.gid == b.gid && a.caller_syncs_outcome == b.caller_syncs_outcome;
}

bool same(const ShimState& a, const ShimState& b) {
  return a.shim_pid == b.shim_pid && a.shim_start_time == b.shim_start_time &&
         a.child_pid == b.child_pid && a.started_at_ms == b.started_at_ms;
}

bool same(const ExitRecord& a, const ExitRecord& b) {
  return a.reason == b.reason && a.exit_code == b.exit_code && a.signal == b.signal &&
         a.started_at_ms == b.started_at_ms && a.ended_at_ms == b.ended_at_ms && a.error == b.error;
}

// Reads `text`; for what is accepted, writes it and reads it back.
template <class Read, class Write>
void round_trip(const std::string& text, Read read, Write write, const char* what) {
  auto parsed = read(text);
  if (!parsed.ok()) {
    check(!parsed.error().code.empty() && !parsed.error().message.empty(),
          std::string("a refused ") + what + " without a code or message");
    return;
  }
  auto again = read(write(*parsed));
  check(again.ok(), std::string("a written ") + what + " does not read back");
  check(same(*parsed, *again), std::string("a ") + what + " changed through its writer");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string text(amlnode::fuzz::as_text(data + 1, size - 1));
  switch (data[0] % 3) {
    case 0:
      round_trip(text, launch_spec_from_json, launch_spec_to_json, "launch spec");
      break;
    case 1:
      round_trip(text, shim_state_from_json, shim_state_to_json, "shim state");
      break;
    default:
      round_trip(text, exit_record_from_json, exit_record_to_json, "exit record");
      break;
  }
  return 0;
}
