#pragma once

// Value formats and name rules of the SDK that do not depend on which shape a job came in.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "spec/job.h"

namespace amlnode::spec::detail {

inline constexpr std::string_view kSizeExpected = "a size like 2g, 512m or 1073741824";

// Docker's size format, as `docker run --shm-size` takes it: digits with an optional b, k, m or
// g (or kb, mb, gb) suffix, case-insensitive, in powers of 1024. Zero and sizes that overflow 64
// bits are rejected.
std::optional<std::uint64_t> parse_size(std::string_view text);

// An environment variable name: [A-Za-z_][A-Za-z0-9_]*.
bool is_variable_name(std::string_view name);
// An input name becomes the tail of AZUREML_DATAREFERENCE_<name>: [A-Za-z0-9_]+.
bool is_input_name(std::string_view name);
// A pipeline step name: 3-32 characters of lowercase letters, digits and dashes, starting with a
// letter.
bool is_step_name(std::string_view name);

// Case-insensitive matches against the SDK's lists.
std::optional<Framework> parse_framework(std::string_view text);
std::optional<Communicator> parse_communicator(std::string_view text);
std::optional<InputMode> parse_input_mode(std::string_view text);

// The allowed values for messages: "Python, PySpark, CNTK, TensorFlow or PyTorch".
std::string framework_names();
std::string communicator_names();
std::string input_mode_names();

bool equals_ignoring_case(std::string_view a, std::string_view b);
std::string lower(std::string_view text);

}  // namespace amlnode::spec::detail
