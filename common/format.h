#pragma once

// Numbers as people read them in logs and command output.

#include <string>
#include <string_view>

namespace amlnode {

// Binary multiples with one decimal: "512 B", "1.5 KiB", "3.2 GiB" (up to TiB).
std::string human_bytes(double bytes);

// `text` percent-encoded: every byte but ASCII letters, digits and the bytes of `keep` written
// %XX (upper-case hex).
std::string percent_escape(std::string_view text, std::string_view keep);

// `text` as one part of a URL's path: every byte but letters, digits and -_.~ written %XX, and
// '/' too unless `keep_slash` (a log stream's name keeps its folders).
std::string url_path_escape(std::string_view text, bool keep_slash = false);

// Text someone else gave (a name, a path, a value), fit to quote in a message: control bytes, NUL
// included, and backslashes written as \xNN, and anything past `max_bytes` cut with "...". A NUL
// would end the message early for any C reader; a newline would forge a log line.
std::string printable(std::string_view text, std::size_t max_bytes = 200);

// `text` single-quoted for a POSIX shell: one word, nothing in it expanded.
std::string shell_quote(std::string_view text);

}  // namespace amlnode
