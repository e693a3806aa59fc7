#pragma once

// The JSON message streams of POST /build and POST /images/create: one JSON object per line,
// carrying `stream` text (build output), `status` lines (pull progress), `aux` data (the built
// image's id) and `error` (the failure, which arrives with HTTP 200 because the stream has
// already started).

#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace amlnode::docker {

// Where build and pull progress goes, as text ending in newlines. The caller decides where that
// is (system_logs/image_build.txt and the terminal). It is called on the thread doing the work.
using ProgressSink = std::function<void(std::string_view text)>;

// Splits a byte stream into lines and parses each non-empty one as JSON. A line longer than
// `max_line` bytes is dropped whole (nothing the daemon sends legitimately comes close), so memory
// stays bounded however the stream misbehaves; so is a line that is not JSON.
class JsonLineReader {
 public:
  using Handler = std::function<void(const nlohmann::json&)>;
  explicit JsonLineReader(Handler handler, std::size_t max_line = 1u << 20);

  void feed(std::string_view piece);
  // Parses what is left after the last newline.
  void finish();

 private:
  void emit();

  Handler handler_;
  std::size_t max_line_;
  std::string line_;
  bool dropping_ = false;
};

// Turns the daemon's progress messages into text for a ProgressSink and remembers the outcome.
// Per-layer download bars (messages with a progressDetail) are left out: they are thousands of
// redraws of the same line. Every text passes through `redact` before it reaches the sink.
class ProgressRelay {
 public:
  ProgressRelay(ProgressSink sink, std::function<std::string(std::string)> redact);

  void handle(const nlohmann::json& message);

  // The daemon's error message, when the stream reported one (the first one is kept).
  const std::optional<std::string>& error() const { return error_; }
  // The image id from an `aux` message of a build.
  const std::optional<std::string>& image_id() const { return image_id_; }

 private:
  void show(std::string text);

  ProgressSink sink_;
  std::function<std::string(std::string)> redact_;
  std::optional<std::string> error_;
  std::optional<std::string> image_id_;
};

}  // namespace amlnode::docker
