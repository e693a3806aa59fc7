#include "spec/tree.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <deque>
#include <map>
#include <sstream>

#include "common/format.h"

namespace amlnode::spec::detail {
namespace {

std::string at_line(int line, int column) {
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

const std::string kLimitMessage = "the file nests deeper than " + std::to_string(kMaxDepth) +
                                  " levels or expands to more than " + std::to_string(kMaxNodes) +
                                  " values (through YAML aliases?)";

// Thrown from inside an event handler to stop a parse that hit a limit; caught by the parse
// functions below, never further out.
struct LimitExceeded {};

Node scalar(std::string text, bool quoted, int line, int column) {
  Node node;
  node.kind = Node::Kind::Scalar;
  node.text = std::move(text);
  node.quoted = quoted;
  node.line = line;
  node.column = column;
  return node;
}

std::size_t count_nodes(const Node& node) {
  std::size_t count = 1;
  for (const auto& item : node.items) count += count_nodes(item);
  for (const auto& [_, value] : node.entries) count += count_nodes(value);
  return count;
}

// Assembles a tree from parser events, the same way for both formats: containers open and
// close, finished values are placed into the innermost open container, and a mapping's values
// are placed under the key given just before. Duplicate keys, the depth limit and the node
// budget are enforced here.
class TreeBuilder {
 public:
  explicit TreeBuilder(std::vector<Diagnostic>& errors) : errors_(errors) {}

  std::optional<Node>& root() { return root_; }

  // Whether the innermost open container is a mapping still waiting for a key.
  bool expects_key() const {
    return !stack_.empty() && stack_.back().node->is_mapping() && !stack_.back().key;
  }

  void key(std::string name, int line) {
    Open& top = stack_.back();
    auto first = std::find_if(top.key_lines.begin(), top.key_lines.end(),
                              [&](const auto& seen) { return seen.first == name; });
    if (first != top.key_lines.end()) {
      std::string where;
      if (line > 0) {
        where = " (lines " + std::to_string(first->second) + " and " + std::to_string(line) + ")";
      }
      errors_.push_back({join_path(top.path, name), "given twice" + where});
      top.duplicate = true;
    } else {
      top.key_lines.emplace_back(name, line);
      top.duplicate = false;
    }
    top.key = std::move(name);
  }

  // A key that is not a plain string (a YAML complex key): its value is parsed but dropped.
  void unusable_key(const std::string& message) {
    Open& top = stack_.back();
    errors_.push_back({top.path, message});
    top.key = std::string();
    top.duplicate = true;
  }

  // Places a finished value and returns where it now lives.
  Node* value(Node node) {
    spend(1);
    if (stack_.empty()) {
      root_ = std::move(node);
      return &*root_;
    }
    Open& top = stack_.back();
    if (top.node->is_sequence()) {
      top.node->items.push_back(std::move(node));
      return &top.node->items.back();
    }
    std::string name = std::move(*top.key);
    top.key.reset();
    if (top.duplicate) {
      dropped_.push_back(std::move(node));
      return &dropped_.back();
    }
    top.node->entries.emplace_back(std::move(name), std::move(node));
    return &top.node->entries.back().second;
  }

  Node* open(Node::Kind kind, int line, int column) {
    if (static_cast<int>(stack_.size()) >= kMaxDepth) throw LimitExceeded{};
    std::string path = child_path();
    Node node;
    node.kind = kind;
    node.line = line;
    node.column = column;
    Node* placed = value(std::move(node));
    Open opened;
    opened.node = placed;
    opened.path = std::move(path);
    stack_.push_back(std::move(opened));
    return placed;
  }

  void close() { stack_.pop_back(); }

  // Counts nodes made outside value() (copies for YAML aliases) against the budget.
  void spend(std::size_t nodes) {
    nodes_ += nodes;
    if (nodes_ > kMaxNodes) throw LimitExceeded{};
  }

 private:
  struct Open {
    Node* node = nullptr;
    std::string path;
    std::optional<std::string> key;  // a mapping's key waiting for its value
    bool duplicate = false;          // that key was seen before: its value is dropped
    std::vector<std::pair<std::string, int>> key_lines;
  };

  std::string child_path() const {
    if (stack_.empty()) return "";
    const Open& top = stack_.back();
    if (top.node->is_sequence()) return item_path(top.path, top.node->items.size());
    return join_path(top.path, top.key.value_or(""));
  }

  std::vector<Diagnostic>& errors_;
  std::optional<Node> root_;
  // Pointers into the tree stay valid: a container only grows while it is the innermost one.
  std::vector<Open> stack_;
  // Values under duplicate or unusable keys: parsed (the syntax still counts) but not kept. A
  // deque, so a dropped container stays put while its contents are parsed into it.
  std::deque<Node> dropped_;
  std::size_t nodes_ = 0;
};

// Builds the tree from yaml-cpp's parser events. Building from events (rather than through
// YAML::Load) keeps yaml-cpp's shared-node graph out of the picture: an alias becomes a copy of
// its anchor's finished value, counted against the node budget, and an alias used inside its
// own anchor is simply undefined.
class YamlTreeBuilder final : public YAML::EventHandler {
 public:
  explicit YamlTreeBuilder(std::vector<Diagnostic>& errors) : errors_(errors), tree_(errors) {}

  std::optional<Node>& root() { return tree_.root(); }

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    Node node;
    node.line = mark.line + 1;
    node.column = mark.column + 1;
    place(std::move(node), anchor);
  }

  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto found = anchors_.find(anchor);
    if (found == anchors_.end()) {
      errors_.push_back({"", "malformed YAML at " + at_line(mark.line + 1, mark.column + 1) +
                                 ": an alias refers to an anchor that is not finished yet"});
      place(Node{}, YAML::NullAnchor);
      return;
    }
    tree_.spend(count_nodes(found->second));
    place(found->second, YAML::NullAnchor);
  }

  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    place(scalar(value, !is_plain_tag(tag), mark.line + 1, mark.column + 1), anchor);
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(Node::Kind::Sequence, mark, anchor);
  }
  void OnSequenceEnd() override { close(); }

  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(Node::Kind::Mapping, mark, anchor);
  }
  void OnMapEnd() override { close(); }

 private:
  // A plain scalar has the non-specific tag "?"; an explicit core tag such as !!int still reads
  // as a plain value, while quotes ("!") and !!str make a string.
  static bool is_plain_tag(const std::string& tag) {
    if (tag == "?") return true;
    static const std::string kCore = "tag:yaml.org,2002:";
    return tag.rfind(kCore, 0) == 0 && tag != kCore + "str";
  }

  void place(Node node, YAML::anchor_t anchor) {
    if (tree_.expects_key()) return place_key(node);
    if (anchor != YAML::NullAnchor) {
      tree_.spend(count_nodes(node));
      anchors_[anchor] = node;
    }
    tree_.value(std::move(node));
  }

  void place_key(const Node& node) {
    if (node.is_scalar()) return tree_.key(node.text, node.line);
    tree_.unusable_key("keys must be plain strings, found " +
                       std::string(node.is_null() ? "an empty key" : "a complex key") + " at " +
                       at_line(node.line, node.column));
  }

  void open(Node::Kind kind, const YAML::Mark& mark, YAML::anchor_t anchor) {
    if (tree_.expects_key()) {
      // A container used as a key: reported, and its contents parsed into a throwaway node.
      tree_.unusable_key("keys must be plain strings, found a complex key at " +
                         at_line(mark.line + 1, mark.column + 1));
    }
    open_.push_back({tree_.open(kind, mark.line + 1, mark.column + 1), anchor});
  }

  void close() {
    Opened opened = open_.back();
    open_.pop_back();
    tree_.close();
    if (opened.anchor != YAML::NullAnchor) {
      tree_.spend(count_nodes(*opened.node));
      anchors_[opened.anchor] = *opened.node;
    }
  }

  struct Opened {
    Node* node;
    YAML::anchor_t anchor;
  };

  std::vector<Diagnostic>& errors_;
  TreeBuilder tree_;
  std::vector<Opened> open_;
  std::map<YAML::anchor_t, Node> anchors_;
};

// Notes where a document starts and whether it holds anything. Used after the first document to
// tell a real second document from an empty trailing one (`---` at the end), and both from a
// parser that is stuck on a token it cannot use: yaml-cpp then reports an empty document at the
// same place again and again (for input such as a lone ",").
class DocumentProbe final : public YAML::EventHandler {
 public:
  std::optional<YAML::Mark> start;
  bool has_content = false;

  void OnDocumentStart(const YAML::Mark& mark) override { start = mark; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { has_content = true; }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {
    has_content = true;
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    has_content = true;
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    has_content = true;
  }
  void OnMapEnd() override {}
};

// Checks that nothing but empty documents follows the first one. Returns the problem, if any.
std::optional<std::string> check_no_more_documents(YAML::Parser& parser, const Node& first) {
  constexpr int kMaxEmptyDocuments = 16;
  int line = first.line;
  int column = first.column;
  for (int i = 0; i < kMaxEmptyDocuments; ++i) {
    DocumentProbe next;
    if (!parser.HandleNextDocument(next)) return std::nullopt;
    if (next.has_content) {
      return "the file holds more than one YAML document; a job file is one document";
    }
    int next_line = next.start ? next.start->line + 1 : 0;
    int next_column = next.start ? next.start->column + 1 : 0;
    if (next_line == line && next_column == column) {
      return "malformed YAML at " + at_line(line, column) + ": no value can start here";
    }
    line = next_line;
    column = next_column;
  }
  return "the file holds more than " + std::to_string(kMaxEmptyDocuments) + " YAML documents";
}

// Builds the tree from nlohmann's SAX events. SAX is used (rather than nlohmann::json itself)
// because it hands over the raw text of floating-point numbers, so `0.010` stays as written, and
// because it lets duplicate keys be reported instead of silently keeping the last one.
class JsonTreeBuilder final : public nlohmann::json_sax<nlohmann::json> {
 public:
  JsonTreeBuilder(const std::string& text, std::vector<Diagnostic>& errors)
      : text_(text), errors_(errors), tree_(errors) {}

  std::optional<Node>& root() { return tree_.root(); }

  bool null() override { return add(Node{}); }
  bool boolean(bool value) override { return add(plain(value ? "true" : "false")); }
  bool number_integer(number_integer_t value) override { return add(plain(std::to_string(value))); }
  bool number_unsigned(number_unsigned_t value) override {
    return add(plain(std::to_string(value)));
  }
  bool number_float(number_float_t, const string_t& raw) override { return add(plain(raw)); }
  bool string(string_t& value) override { return add(scalar(value, true, 0, 0)); }
  bool binary(binary_t&) override { return add(Node{}); }

  bool start_object(std::size_t) override {
    tree_.open(Node::Kind::Mapping, 0, 0);
    return true;
  }
  bool start_array(std::size_t) override {
    tree_.open(Node::Kind::Sequence, 0, 0);
    return true;
  }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(string_t& name) override {
    tree_.key(name, 0);
    return true;
  }

  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& error) override {
    errors_.push_back(
        {"", "malformed JSON at " + position_text(position) + ": " + describe_error(error.what())});
    return false;
  }

 private:
  static Node plain(std::string text) { return scalar(std::move(text), false, 0, 0); }

  bool add(Node node) {
    tree_.value(std::move(node));
    return true;
  }

  bool close() {
    tree_.close();
    return true;
  }

  // nlohmann counts bytes read; the offending character is the last one read. Columns count
  // characters, not bytes, so a UTF-8 sequence is one column.
  std::string position_text(std::size_t position) const {
    std::size_t offset = std::min(position == 0 ? 0 : position - 1, text_.size());
    int line = 1;
    int column = 1;
    for (std::size_t i = 0; i < offset; ++i) {
      unsigned char c = static_cast<unsigned char>(text_[i]);
      if (c == '\n') {
        ++line;
        column = 1;
      } else if ((c & 0xC0) != 0x80) {
        ++column;
      }
    }
    return at_line(line, column);
  }

  // nlohmann's message repeats the position and quotes the text it last read, which could be a
  // secret (a registry password). Only the description and what was expected are kept.
  static std::string describe_error(std::string what) {
    auto colon = what.find(": ");
    if (what.find("parse error") != std::string::npos && colon != std::string::npos) {
      what = what.substr(colon + 2);
    }
    auto last_read = what.find("; last read: '");
    if (last_read != std::string::npos) {
      auto expected = what.rfind("'; expected ");
      std::string tail;
      if (expected != std::string::npos && expected > last_read) {
        tail = "; " + what.substr(expected + 3);
      }
      what = what.substr(0, last_read) + tail;
    }
    return what;
  }

  const std::string& text_;
  std::vector<Diagnostic>& errors_;
  TreeBuilder tree_;
};

}  // namespace

Node::Node() = default;

const Node* Node::find(std::string_view key) const {
  for (const auto& [name, value] : entries) {
    if (name == key) return &value;
  }
  return nullptr;
}

std::string join_path(std::string_view parent, std::string_view key) {
  // A key with control bytes (a NUL would end the message for any C reader) is shown escaped.
  bool plain = std::none_of(key.begin(), key.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) == 0x7f;
  });
  if (!plain) return std::string(parent) + "[\"" + printable(key) + "\"]";
  if (parent.empty()) return std::string(key);
  return std::string(parent) + "." + std::string(key);
}

std::string item_path(std::string_view parent, std::size_t index) {
  return std::string(parent) + "[" + std::to_string(index) + "]";
}

ParsedFile parse_yaml(const std::string& text) {
  ParsedFile parsed;
  try {
    std::istringstream stream(text);
    YAML::Parser parser(stream);
    YamlTreeBuilder builder(parsed.errors);
    if (!parser.HandleNextDocument(builder)) {
      parsed.root = Node{};
      return parsed;
    }
    // The first document's position is where an empty document starts, which is where a stuck
    // parser would start the next one too.
    Node first = builder.root() ? *builder.root() : Node{};
    if (auto problem = check_no_more_documents(parser, first)) {
      parsed.errors.push_back({"", *problem});
    }
    if (parsed.errors.empty()) parsed.root = std::move(builder.root());
  } catch (const LimitExceeded&) {
    parsed.errors.push_back({"", kLimitMessage});
  } catch (const YAML::Exception& error) {
    // A few of yaml-cpp's messages end in a piece of the text ("unknown escape character: q"),
    // which could be part of a secret, so only the description before it is kept.
    std::string description = error.msg.substr(0, error.msg.find(": "));
    parsed.errors.push_back({"", "malformed YAML at " +
                                     at_line(error.mark.line + 1, error.mark.column + 1) + ": " +
                                     description});
  }
  if (!parsed.errors.empty()) parsed.root.reset();
  return parsed;
}

ParsedFile parse_json(const std::string& text) {
  ParsedFile parsed;
  JsonTreeBuilder builder(text, parsed.errors);
  bool ok = false;
  try {
    ok = nlohmann::json::sax_parse(text, &builder);
  } catch (const LimitExceeded&) {
    parsed.errors.push_back({"", kLimitMessage});
  }
  if (ok && parsed.errors.empty()) parsed.root = std::move(builder.root());
  if (!ok && parsed.errors.empty()) parsed.errors.push_back({"", "malformed JSON"});
  return parsed;
}

std::optional<bool> core_bool(std::string_view text) {
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  return std::nullopt;
}

// The number rules below are scanned by hand rather than matched with std::regex: libstdc++'s
// regex engine recurses once per character it matches, so a plain scalar of some 100,000 digits
// (a job file may hold 4 MiB) overflowed the stack of whoever loaded it.

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// The position after the run of digits starting at `at`.
std::size_t skip_digits(std::string_view text, std::size_t at) {
  while (at < text.size() && is_digit(text[at])) ++at;
  return at;
}

// The position after an optional sign at `at`.
std::size_t skip_sign(std::string_view text, std::size_t at) {
  return at < text.size() && (text[at] == '-' || text[at] == '+') ? at + 1 : at;
}

}  // namespace

// [-+]?[0-9]+
bool looks_like_integer(std::string_view text) {
  std::size_t start = skip_sign(text, 0);
  std::size_t end = skip_digits(text, start);
  return end > start && end == text.size();
}

// [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
bool looks_like_float(std::string_view text) {
  std::size_t at = skip_sign(text, 0);
  if (at < text.size() && text[at] == '.') {
    std::size_t end = skip_digits(text, at + 1);
    if (end == at + 1) return false;
    at = end;
  } else {
    std::size_t end = skip_digits(text, at);
    if (end == at) return false;
    at = end;
    if (at < text.size() && text[at] == '.') at = skip_digits(text, at + 1);
  }
  if (at < text.size() && (text[at] == 'e' || text[at] == 'E')) {
    std::size_t start = skip_sign(text, at + 1);
    std::size_t end = skip_digits(text, start);
    if (end == start) return false;
    at = end;
  }
  return at == text.size();
}

nlohmann::json to_json(const Node& node) {
  switch (node.kind) {
    case Node::Kind::Null:
      return nullptr;
    case Node::Kind::Sequence: {
      nlohmann::json array = nlohmann::json::array();
      for (const auto& item : node.items) array.push_back(to_json(item));
      return array;
    }
    case Node::Kind::Mapping: {
      nlohmann::json object = nlohmann::json::object();
      for (const auto& [key, value] : node.entries) object[key] = to_json(value);
      return object;
    }
    case Node::Kind::Scalar:
      break;
  }
  if (node.quoted) return node.text;
  if (auto flag = core_bool(node.text)) return *flag;
  if (looks_like_integer(node.text)) {
    std::int64_t value = 0;
    const char* begin = node.text.data() + (node.text.front() == '+' ? 1 : 0);
    const char* end = node.text.data() + node.text.size();
    if (std::from_chars(begin, end, value).ec == std::errc{}) return value;
  }
  if (looks_like_float(node.text)) return std::strtod(node.text.c_str(), nullptr);
  return node.text;
}

}  // namespace amlnode::spec::detail
