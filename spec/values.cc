#include "spec/values.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>

namespace amlnode::spec::detail {
namespace {

constexpr std::array kFrameworks = {Framework::Python, Framework::PySpark, Framework::CNTK,
                                    Framework::TensorFlow, Framework::PyTorch};
constexpr std::array kCommunicators = {Communicator::None,    Communicator::ParameterServer,
                                       Communicator::OpenMpi, Communicator::IntelMpi,
                                       Communicator::Mpi,     Communicator::Gloo,
                                       Communicator::Nccl,    Communicator::ParallelTask};
constexpr std::array kInputModes = {InputMode::Mount, InputMode::Download, InputMode::Upload};

// The name rules and the size format below are checked by hand rather than with std::regex:
// libstdc++'s regex engine recurses once per character it matches, so a long enough value in a job
// file overflowed the stack of whoever loaded it.
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// [A-Za-z0-9_], in ASCII whatever the locale.
bool is_word(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_';
}

template <class Enum, std::size_t N>
std::optional<Enum> parse_enum(std::string_view text, const std::array<Enum, N>& values) {
  for (Enum value : values) {
    if (equals_ignoring_case(text, to_string(value))) return value;
  }
  return std::nullopt;
}

template <class Enum, std::size_t N>
std::string enum_names(const std::array<Enum, N>& values) {
  std::string names;
  for (std::size_t i = 0; i < N; ++i) {
    if (i > 0) names += (i + 1 == N) ? " or " : ", ";
    names += to_string(values[i]);
  }
  return names;
}

}  // namespace

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  });
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::size_t digits_end = 0;
  while (digits_end < text.size() && is_digit(text[digits_end])) ++digits_end;
  if (digits_end == 0) return std::nullopt;
  std::string unit = lower(text.substr(digits_end));
  int shift = 0;
  if (unit == "k" || unit == "kb") {
    shift = 10;
  } else if (unit == "m" || unit == "mb") {
    shift = 20;
  } else if (unit == "g" || unit == "gb") {
    shift = 30;
  } else if (!unit.empty() && unit != "b") {
    return std::nullopt;
  }
  std::uint64_t digits = 0;
  auto [_, ec] = std::from_chars(text.data(), text.data() + digits_end, digits);
  if (ec != std::errc{} || digits == 0) return std::nullopt;
  if (digits > (UINT64_MAX >> shift)) return std::nullopt;
  return digits << shift;
}

bool is_variable_name(std::string_view name) {
  return !name.empty() && !is_digit(name.front()) && std::all_of(name.begin(), name.end(), is_word);
}

bool is_input_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), is_word);
}

bool is_step_name(std::string_view name) {
  return name.size() >= 3 && name.size() <= 32 && name.front() >= 'a' && name.front() <= 'z' &&
         std::all_of(name.begin(), name.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || is_digit(c) || c == '-'; });
}

std::optional<Framework> parse_framework(std::string_view text) {
  return parse_enum(text, kFrameworks);
}

std::optional<Communicator> parse_communicator(std::string_view text) {
  return parse_enum(text, kCommunicators);
}

std::optional<InputMode> parse_input_mode(std::string_view text) {
  return parse_enum(text, kInputModes);
}

std::string framework_names() {
  return enum_names(kFrameworks);
}
std::string communicator_names() {
  return enum_names(kCommunicators);
}
std::string input_mode_names() {
  return enum_names(kInputModes);
}

}  // namespace amlnode::spec::detail
