#pragma once

// Reading typed values out of the tree. Every read names its field by path in the user's own
// spelling and records a diagnostic instead of failing, so one pass reports every problem.

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "spec/load.h"
#include "spec/tree.h"

namespace amlnode::spec::detail {

// The errors and warnings of one load, in the order they were found.
class Diagnostics {
 public:
  void error(std::string path, std::string message) {
    errors_.push_back({std::move(path), std::move(message)});
  }
  void warning(std::string path, std::string message) {
    warnings_.push_back({std::move(path), std::move(message)});
  }
  void add_errors(const std::vector<Diagnostic>& errors) {
    errors_.insert(errors_.end(), errors.begin(), errors.end());
  }

  bool has_errors() const { return !errors_.empty(); }
  std::size_t error_count() const { return errors_.size(); }
  std::vector<Diagnostic>& errors() { return errors_; }
  std::vector<Diagnostic>& warnings() { return warnings_; }

 private:
  std::vector<Diagnostic> errors_;
  std::vector<Diagnostic> warnings_;
};

// A field of the user's file: its value (nullptr when absent) and its path.
struct Field {
  const Node* node = nullptr;
  std::string path;

  // The entry `key` of a mapping; absent when this is not a mapping or has no such key.
  Field operator[](std::string_view key) const;

  // Set means present and not empty: null, "", [] and {} all mean "not set", in both shapes,
  // because RunConfiguration.save() writes every unset field that way.
  bool is_set() const;
};

// What a value is, for "got ..." in messages: "lots" (quoted), 0, true, null, a list, a mapping.
// Secret values are described by their kind only, so a password never reaches a message.
std::string describe(const Node& node, bool secret = false);

// Quotes a string for a message, escaping what would break the line.
std::string quote(std::string_view text);

// Typed reads. Each returns nullopt (and records an error naming the field) when the value has
// the wrong kind; an unset field returns nullopt without an error.
class Reader {
 public:
  explicit Reader(Diagnostics& diagnostics) : diagnostics_(diagnostics) {}

  Diagnostics& diagnostics() { return diagnostics_; }

  // A scalar, as written. Plain numbers and booleans are accepted as text (`experiment_name:
  // 2024` means "2024"); lists and mappings are errors.
  std::optional<std::string> text(const Field& field, bool secret = false);
  // Like text(), but for command-line arguments and variable values, whose message says so.
  std::optional<std::string> argument(const Field& field, std::string_view expected);
  std::optional<bool> boolean(const Field& field);
  // A plain integer within [min, max]; `expected` is what messages say was wanted.
  std::optional<std::int64_t> integer(const Field& field, std::int64_t min,
                                      std::string_view expected,
                                      std::int64_t max = std::numeric_limits<std::int64_t>::max());
  std::optional<int> count(const Field& field, int min = 1);
  // A list whose items are scalars (kept as written).
  std::optional<std::vector<std::string>> text_list(const Field& field);
  // Records an error unless the field is a mapping.
  bool mapping(const Field& field);

  // Records "<path>: expected <expected>, got <what the value is>".
  void wrong(const Field& field, std::string_view expected, bool secret = false);

 private:
  Diagnostics& diagnostics_;
};

// The known name closest to `unknown`, when one is close enough to be the likely intent: the
// names are compared ignoring case, `_` and `-` (so `nodeCount` matches `node_count`), by edit
// distance, as an abbreviation (`gpu` matches `gpu_support`) or by a shared prefix of at least
// five letters (`entrypoint` matches `entry_script`).
std::optional<std::string> closest_name(std::string_view unknown,
                                        std::span<const std::string_view> known);

// Walks a mapping in file order, handing each set entry to the handler registered for its key.
// Entries whose value is unset are skipped: an empty value means the field was not given.
class MappingWalker {
 public:
  using Handler = std::function<void(const Field&)>;
  using UnknownHandler = std::function<void(const std::string& key, const Field&)>;

  MappingWalker& on(std::string key, Handler handler);

  // Known keys, for did-you-mean hints.
  std::vector<std::string_view> keys() const;

  // Runs the handlers; unknown keys go to `unknown`.
  void walk(const Field& mapping, const UnknownHandler& unknown) const;

  // Runs the handlers; unknown keys are errors with a did-you-mean hint.
  void walk_strict(const Field& mapping, Diagnostics& diagnostics) const;

 private:
  std::vector<std::pair<std::string, Handler>> handlers_;
};

// "did you mean "x"?" or "" when nothing is close.
std::string did_you_mean(std::string_view unknown, std::span<const std::string_view> known);

}  // namespace amlnode::spec::detail
