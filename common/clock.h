#pragma once

// Time is injected at every seam that reads it, so tests control it instead of sleeping.

#include <chrono>
#include <memory>
#include <string>

namespace amlnode {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::system_clock::time_point now() const = 0;
};

// The real wall clock.
std::shared_ptr<Clock> make_system_clock();

// ISO-8601 UTC with milliseconds, e.g. "2026-11-22T08:43:00.123Z" (the format of run.json).
std::string format_utc(std::chrono::system_clock::time_point t);

// Milliseconds since the Unix epoch.
long long unix_millis(std::chrono::system_clock::time_point t);

}  // namespace amlnode
