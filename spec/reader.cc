#include "spec/reader.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace amlnode::spec::detail {
namespace {

constexpr std::size_t kMaxQuoted = 80;

std::string normalised_name(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == '_' || c == '-') continue;
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> previous(b.size() + 1);
  std::vector<std::size_t> current(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitution});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

std::size_t common_prefix(std::string_view a, std::string_view b) {
  std::size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

bool is_plain_number_or_bool(const Node& node) {
  return !node.quoted &&
         (core_bool(node.text) || looks_like_integer(node.text) || looks_like_float(node.text));
}

}  // namespace

Field Field::operator[](std::string_view key) const {
  const Node* child = node ? node->find(key) : nullptr;
  return {child, join_path(path, key)};
}

bool Field::is_set() const {
  if (!node) return false;
  switch (node->kind) {
    case Node::Kind::Null:
      return false;
    case Node::Kind::Scalar:
      return !node->text.empty();
    case Node::Kind::Sequence:
      return !node->items.empty();
    case Node::Kind::Mapping:
      return !node->entries.empty();
  }
  return false;
}

std::string quote(std::string_view text) {
  std::string out = "\"";
  std::size_t shown = std::min(text.size(), kMaxQuoted);
  for (std::size_t i = 0; i < shown; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (shown < text.size()) out += "...";
  return out + "\"";
}

std::string describe(const Node& node, bool secret) {
  switch (node.kind) {
    case Node::Kind::Null:
      return "null";
    case Node::Kind::Sequence:
      return "a list";
    case Node::Kind::Mapping:
      return "a mapping";
    case Node::Kind::Scalar:
      break;
  }
  if (secret) return node.quoted ? "a string" : "a value";
  if (is_plain_number_or_bool(node)) return node.text;
  return quote(node.text);
}

void Reader::wrong(const Field& field, std::string_view expected, bool secret) {
  std::string found = field.node ? describe(*field.node, secret) : "nothing";
  diagnostics_.error(field.path, "expected " + std::string(expected) + ", got " + found);
}

std::optional<std::string> Reader::text(const Field& field, bool secret) {
  if (!field.is_set()) return std::nullopt;
  if (field.node->is_scalar()) return field.node->text;
  wrong(field, "a string", secret);
  return std::nullopt;
}

std::optional<std::string> Reader::argument(const Field& field, std::string_view expected) {
  if (field.node && field.node->is_scalar()) {
    // Arguments and variables end at a NUL byte on their way into the process: refused rather
    // than silently cut.
    if (auto nul = field.node->text.find('\0'); nul != std::string::npos) {
      diagnostics().error(field.path, "contains a NUL byte (at byte " + std::to_string(nul) +
                                          "), which a process's arguments and environment "
                                          "cannot hold");
      return std::nullopt;
    }
    return field.node->text;
  }
  wrong(field, expected);
  return std::nullopt;
}

std::optional<bool> Reader::boolean(const Field& field) {
  if (!field.is_set()) return std::nullopt;
  if (field.node->is_scalar() && !field.node->quoted) {
    if (auto value = core_bool(field.node->text)) return value;
  }
  wrong(field, "true or false");
  return std::nullopt;
}

std::optional<std::int64_t> Reader::integer(const Field& field, std::int64_t min,
                                            std::string_view expected, std::int64_t max) {
  if (!field.is_set()) return std::nullopt;
  const Node& node = *field.node;
  if (node.is_scalar() && !node.quoted && looks_like_integer(node.text)) {
    std::int64_t value = 0;
    const char* begin = node.text.data() + (node.text.front() == '+' ? 1 : 0);
    const char* end = node.text.data() + node.text.size();
    auto [ptr, ec] = std::from_chars(begin, end, value);
    if (ec == std::errc{} && ptr == end && value >= min && value <= max) return value;
  }
  wrong(field, expected);
  return std::nullopt;
}

std::optional<int> Reader::count(const Field& field, int min) {
  auto value =
      integer(field, min, "an integer >= " + std::to_string(min), std::numeric_limits<int>::max());
  if (!value) return std::nullopt;
  return static_cast<int>(*value);
}

std::optional<std::vector<std::string>> Reader::text_list(const Field& field) {
  if (!field.is_set()) return std::nullopt;
  if (!field.node->is_sequence()) {
    wrong(field, "a list of strings");
    return std::nullopt;
  }
  std::vector<std::string> values;
  bool ok = true;
  for (std::size_t i = 0; i < field.node->items.size(); ++i) {
    Field item{&field.node->items[i], item_path(field.path, i)};
    if (auto value = argument(item, "a string")) {
      values.push_back(*value);
    } else {
      ok = false;
    }
  }
  if (!ok) return std::nullopt;
  return values;
}

bool Reader::mapping(const Field& field) {
  if (field.node && field.node->is_mapping()) return true;
  wrong(field, "a mapping");
  return false;
}

std::optional<std::string> closest_name(std::string_view unknown,
                                        std::span<const std::string_view> known) {
  std::string wanted = normalised_name(unknown);
  std::optional<std::string> best;
  std::size_t best_distance = std::numeric_limits<std::size_t>::max();
  std::size_t best_prefix = 0;
  for (std::string_view candidate : known) {
    std::string name = normalised_name(candidate);
    std::size_t distance = edit_distance(wanted, name);
    std::size_t longest = std::max(wanted.size(), name.size());
    std::size_t prefix = common_prefix(wanted, name);
    // A name the unknown one starts with and goes past is less likely meant than a longer name
    // as near: environment_vars is environment_variables more than environment.
    if (prefix == name.size() && wanted.size() > name.size()) distance += 2;
    bool abbreviation = wanted.size() >= 3 && prefix == wanted.size();
    bool close = distance <= std::max<std::size_t>(2, longest / 3) || abbreviation ||
                 (prefix >= 5 && prefix * 2 >= std::min(wanted.size(), name.size()));
    // Between two as near, the one that shares more of the start wins (environment_vars:
    // environment_variables, not environment).
    bool nearer = distance < best_distance || (distance == best_distance && prefix > best_prefix);
    if (close && nearer) {
      best = std::string(candidate);
      best_distance = distance;
      best_prefix = prefix;
    }
  }
  return best;
}

std::string did_you_mean(std::string_view unknown, std::span<const std::string_view> known) {
  auto name = closest_name(unknown, known);
  return name ? "did you mean " + quote(*name) + "?" : "";
}

MappingWalker& MappingWalker::on(std::string key, Handler handler) {
  handlers_.emplace_back(std::move(key), std::move(handler));
  return *this;
}

std::vector<std::string_view> MappingWalker::keys() const {
  std::vector<std::string_view> names;
  for (const auto& [key, _] : handlers_) names.push_back(key);
  return names;
}

void MappingWalker::walk(const Field& mapping, const UnknownHandler& unknown) const {
  if (!mapping.node || !mapping.node->is_mapping()) return;
  // Named references rather than a structured binding: clang before 16 cannot capture a binding
  // in a lambda, and the fuzz build (AMLNODE_FUZZ) uses clang.
  for (const auto& entry : mapping.node->entries) {
    const std::string& key = entry.first;
    Field child{&entry.second, join_path(mapping.path, key)};
    auto handler = std::find_if(handlers_.begin(), handlers_.end(),
                                [&](const auto& known) { return known.first == key; });
    if (handler == handlers_.end()) {
      unknown(key, child);
    } else if (child.is_set()) {
      handler->second(child);
    }
  }
}

void MappingWalker::walk_strict(const Field& mapping, Diagnostics& diagnostics) const {
  std::vector<std::string_view> known = keys();
  walk(mapping, [&](const std::string& key, const Field& field) {
    std::string hint = did_you_mean(key, known);
    diagnostics.error(field.path, "unknown field" + (hint.empty() ? "" : "; " + hint));
  });
}

}  // namespace amlnode::spec::detail
