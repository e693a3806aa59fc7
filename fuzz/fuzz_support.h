#pragma once

// What the fuzz targets share: failing loudly on a broken property, and the scratch folders they
// work in. A target runs for millions of inputs in one process, so it never leaves a folder per
// input behind, and everything it writes stays below a folder it made itself.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace amlnode::fuzz {

// Prints `what` and aborts, so libFuzzer (or the replay's ctest run) records the input as a crash.
[[noreturn]] void fail(std::string_view what);

// fail(what) unless `holds`: the properties a target checks beyond "does not crash".
inline void check(bool holds, std::string_view what) {
  if (!holds) fail(what);
}

// The input as text.
inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A fresh folder under $TMPDIR (or /tmp) named after `prefix`, removed when the process exits
// normally (libFuzzer's -max_total_time and the replay both end with exit()).
std::filesystem::path make_scratch_folder(const std::string& prefix);

// Removes `path` and everything below it, first making each folder writable and searchable: an
// extracted archive may have given its folders modes that would stop their own removal.
void remove_tree(const std::filesystem::path& path);

}  // namespace amlnode::fuzz
