#include "spec/values.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <regex>

namespace amlnode::spec::detail {
namespace {

constexpr std::array kFrameworks = {Framework::Python, Framework::PySpark, Framework::CNTK,
                                    Framework::TensorFlow, Framework::PyTorch};
constexpr std::array kCommunicators = {Communicator::None,    Communicator::ParameterServer,
                                       Communicator::OpenMpi, Communicator::IntelMpi,
                                       Communicator::Mpi,     Communicator::Gloo,
                                       Communicator::Nccl,    Communicator::ParallelTask};
constexpr std::array kInputModes = {InputMode::Mount, InputMode::Download, InputMode::Upload};

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
  static const std::regex kSize("([0-9]+)([bkmg]|[kmg]b)?", std::regex::icase);
  std::match_results<std::string_view::const_iterator> match;
  if (!std::regex_match(text.begin(), text.end(), match, kSize)) return std::nullopt;
  std::uint64_t digits = 0;
  std::string number = match[1].str();
  auto [_, ec] = std::from_chars(number.data(), number.data() + number.size(), digits);
  if (ec != std::errc{} || digits == 0) return std::nullopt;
  int shift = 0;
  if (match[2].matched) {
    switch (std::tolower(static_cast<unsigned char>(match[2].str().front()))) {
      case 'k':
        shift = 10;
        break;
      case 'm':
        shift = 20;
        break;
      case 'g':
        shift = 30;
        break;
      default:
        break;
    }
  }
  if (digits > (UINT64_MAX >> shift)) return std::nullopt;
  return digits << shift;
}

bool is_variable_name(std::string_view name) {
  static const std::regex kName("[A-Za-z_][A-Za-z0-9_]*");
  return std::regex_match(name.begin(), name.end(), kName);
}

bool is_input_name(std::string_view name) {
  static const std::regex kName("[A-Za-z0-9_]+");
  return std::regex_match(name.begin(), name.end(), kName);
}

bool is_step_name(std::string_view name) {
  static const std::regex kName("[a-z][a-z0-9-]{2,31}");
  return std::regex_match(name.begin(), name.end(), kName);
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
