#pragma once

// A parsed job file as a small tree that keeps what the user wrote. Scalars keep their text
// exactly as written (so `0.010` stays "0.010" when it becomes an argument), quoted scalars are
// marked as strings whatever they look like, and mappings keep their keys in file order. YAML and
// JSON both load into this tree, so the shape readers never deal with either library.

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "spec/load.h"

namespace amlnode::spec::detail {

struct Node {
  enum class Kind { Null, Scalar, Sequence, Mapping };

  // Defaulted in tree.cc, where Node is complete. Left implicit, clang 14 with libstdc++ 12 (the
  // fuzz build, AMLNODE_FUZZ) checks whether `entries` can be default-constructed while Node, and
  // so its pair, is still incomplete, and refuses to compile.
  Node();

  Kind kind = Kind::Null;
  std::string text;     // a scalar's text: as written when plain, decoded when quoted
  bool quoted = false;  // a quoted YAML scalar or a JSON string: a string, never a number or bool
  std::vector<Node> items;                            // a sequence's items
  std::vector<std::pair<std::string, Node>> entries;  // a mapping's entries, in file order
  int line = 0;                                       // 1-based; 0 where unknown (JSON)
  int column = 0;

  bool is_null() const { return kind == Kind::Null; }
  bool is_scalar() const { return kind == Kind::Scalar; }
  bool is_sequence() const { return kind == Kind::Sequence; }
  bool is_mapping() const { return kind == Kind::Mapping; }

  // The value of `key` in a mapping, or nullptr when absent (or when this is not a mapping).
  const Node* find(std::string_view key) const;
};

// The outcome of parsing: a root node when the syntax is valid, else errors whose messages carry
// the 1-based line and column. Duplicate keys and the size limits below are errors too.
struct ParsedFile {
  std::optional<Node> root;
  std::vector<Diagnostic> errors;
};

// Limits that keep hostile input bounded: deep nesting, and YAML aliases, which can expand a
// small file into a huge tree (each alias is a copy of its anchor's value).
inline constexpr int kMaxDepth = 64;
inline constexpr std::size_t kMaxNodes = 200000;

ParsedFile parse_yaml(const std::string& text);
ParsedFile parse_json(const std::string& text);

// The tree as JSON, for the parts kept verbatim (parallel_run, unused .runconfig sections). Plain
// scalars become booleans and numbers the way YAML 1.2's core schema reads them; quoted ones
// stay strings.
nlohmann::json to_json(const Node& node);

// The path of `key` inside `parent` as messages spell it: "inputs.train.mode".
std::string join_path(std::string_view parent, std::string_view key);
// The path of a sequence item: "arguments[2]".
std::string item_path(std::string_view parent, std::size_t index);

// Whether a plain scalar reads as a boolean or a number under YAML 1.2's core schema.
std::optional<bool> core_bool(std::string_view text);
bool looks_like_integer(std::string_view text);
bool looks_like_float(std::string_view text);

}  // namespace amlnode::spec::detail
