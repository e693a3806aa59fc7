#include "executors/shim/diag.h"

#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace amlnode::executors::shim {

void say(const char* format, ...) {
  // UTC with milliseconds, like every other log line of amlnode, so the shim's log lines up with
  // the run's.
  struct timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  struct tm utc {};
  ::gmtime_r(&now.tv_sec, &utc);
  char line[1024];
  int prefix = static_cast<int>(std::strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &utc));
  prefix += std::snprintf(line + prefix, sizeof line - prefix,
                          ".%03ldZ amlnode-shim[%d]: ", now.tv_nsec / 1000000,
                          static_cast<int>(::getpid()));
  va_list args;
  va_start(args, format);
  int body = std::vsnprintf(line + prefix, sizeof line - prefix - 1, format, args);
  va_end(args);
  std::size_t length =
      static_cast<std::size_t>(prefix) + (body < 0 ? 0 : static_cast<std::size_t>(body));
  if (length > sizeof line - 2) length = sizeof line - 2;  // truncated: keep the newline
  line[length++] = '\n';
  ssize_t ignored = ::write(STDERR_FILENO, line, length);
  (void)ignored;
}

}  // namespace amlnode::executors::shim
