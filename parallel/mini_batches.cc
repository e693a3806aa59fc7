#include "parallel/mini_batches.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <string_view>

namespace amlnode::parallel {
namespace fs = std::filesystem;

namespace {

Error invalid(const std::string& what) {
  return Error{"InvalidJob", what};
}

// The offset just past the first line end at or after `from` (the file's size when none).
Result<std::uint64_t> next_line_start(int fd, std::uint64_t from, std::uint64_t size,
                                      const fs::path& file) {
  char buffer[64 * 1024];
  std::uint64_t at = from;
  while (at < size) {
    if (at - from > kMaxLineBytes)
      return invalid(file.string() + ": a line at byte " + std::to_string(from) +
                     " is longer than " + std::to_string(kMaxLineBytes) +
                     " bytes; a table's mini-batches are cut at line ends");
    ssize_t n = ::pread(fd, buffer, sizeof buffer, static_cast<off_t>(at));
    if (n <= 0) return invalid(file.string() + ": cannot be read");
    std::string_view chunk(buffer, static_cast<std::size_t>(n));
    auto newline = chunk.find('\n');
    if (newline != std::string_view::npos) return at + newline + 1;
    at += static_cast<std::uint64_t>(n);
  }
  return size;
}

}  // namespace

Result<std::uint64_t> parse_mini_batch_size(const std::string& text, InputKind kind) {
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  std::string unit = text.substr(digits);
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::uint64_t multiplier = 0;
  if (unit.empty()) multiplier = 1;
  if (kind == InputKind::Table) {
    if (unit == "kb") multiplier = 1ull << 10;
    if (unit == "mb") multiplier = 1ull << 20;
    if (unit == "gb") multiplier = 1ull << 30;
  }
  if (digits == 0 || digits > 12 || multiplier == 0) {
    return invalid(kind == InputKind::Files
                       ? "mini_batch_size: expected a number of files for a file dataset, got \"" +
                             text + "\""
                       : "mini_batch_size: expected a size such as 1024, 100KB, 1MB or 1GB for a "
                         "tabular dataset, got \"" +
                             text + "\"");
  }
  std::uint64_t value = std::stoull(text.substr(0, digits)) * multiplier;
  if (value == 0) return invalid("mini_batch_size: must be more than 0");
  return value;
}

Result<std::vector<fs::path>> input_files(const fs::path& staged) {
  std::error_code ec;
  // The staged input itself may be a link (a mount); links below it are not followed.
  fs::path input = fs::canonical(staged, ec);
  if (ec) return invalid(staged.string() + ": no such file or folder");
  if (fs::is_regular_file(fs::status(input, ec))) return std::vector<fs::path>{input};
  std::vector<fs::path> files;
  fs::recursive_directory_iterator it(input, fs::directory_options::none, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_symlink(ec)) continue;
    if (it->is_regular_file(ec)) files.push_back(it->path());
  }
  if (ec) return invalid(input.string() + ": cannot be listed: " + ec.message());
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<MiniBatch> split_files(const std::vector<fs::path>& files,
                                   std::uint64_t files_per_batch) {
  std::vector<MiniBatch> batches;
  for (std::size_t at = 0; at < files.size(); at += files_per_batch) {
    MiniBatch batch;
    auto end = std::min<std::size_t>(files.size(), at + files_per_batch);
    batch.files.assign(files.begin() + static_cast<std::ptrdiff_t>(at),
                       files.begin() + static_cast<std::ptrdiff_t>(end));
    batch.items = static_cast<std::int64_t>(batch.files.size());
    batches.push_back(std::move(batch));
  }
  return batches;
}

namespace {

// One path component of a partition format: literal text and {name} placeholders, in order.
struct FormatPiece {
  bool placeholder = false;
  std::string text;  // the literal, or the placeholder's name
};
using FormatComponent = std::vector<FormatPiece>;

Result<std::vector<FormatComponent>> parse_partition_format(std::string format) {
  if (format.size() > 1024)
    return invalid("parallel_run.partition_format: longer than 1024 characters");
  // "/{Country}/..." as Azure ML's documents write it: matched from the end of the path anyway.
  while (!format.empty() && format.front() == '/') format.erase(0, 1);
  std::vector<FormatComponent> components(1);
  for (std::size_t at = 0; at < format.size();) {
    FormatComponent& component = components.back();
    if (format[at] == '/') {
      components.emplace_back();
      ++at;
    } else if (format[at] == '{') {
      auto end = format.find('}', at);
      if (end == std::string::npos)
        return invalid("parallel_run.partition_format: a { without its }");
      std::string name = format.substr(at + 1, end - at - 1);
      if (name.empty() || name.find_first_of(":{/") != std::string::npos)
        return invalid("parallel_run.partition_format: {" + name +
                       "}: only plain {name} placeholders are supported (not date formats)");
      // Two placeholders side by side cannot be told apart.
      if (!component.empty() && component.back().placeholder)
        return invalid("parallel_run.partition_format: {" + component.back().text + "}{" + name +
                       "}: placeholders need text between them");
      component.push_back({true, name});
      at = end + 1;
    } else {
      if (component.empty() || component.back().placeholder) component.push_back({false, ""});
      component.back().text.push_back(format[at++]);
    }
  }
  return components;
}

// Matches one path component in one pass: a placeholder takes the text up to its next literal
// (the last occurrence when that literal ends the component, so "{name}.csv" takes "a.b" of
// "a.b.csv"), or the rest. Appends the placeholders' values.
bool match_component(const FormatComponent& pieces, std::string_view text,
                     std::vector<std::string>& values) {
  std::size_t at = 0;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const FormatPiece& piece = pieces[i];
    if (!piece.placeholder) {
      if (text.substr(at, piece.text.size()) != piece.text) return false;
      at += piece.text.size();
      continue;
    }
    std::size_t end = text.size();
    if (i + 1 < pieces.size()) {
      const std::string& next = pieces[i + 1].text;
      bool last = i + 2 == pieces.size();
      end = last ? (text.size() >= next.size() && text.substr(text.size() - next.size()) == next
                        ? text.size() - next.size()
                        : std::string_view::npos)
                 : text.find(next, at);
      if (end == std::string_view::npos || end < at) return false;
    }
    values.emplace_back(text.substr(at, end - at));
    at = end;
  }
  return at == text.size();
}

}  // namespace

Result<std::vector<MiniBatch>> split_by_partition(const std::vector<fs::path>& files,
                                                  const std::string& format,
                                                  const std::vector<std::string>& keys) {
  if (format.empty())
    return invalid(
        "parallel_run.partition_format: partition_keys need the input's "
        "partition_format (\"data/{user}/{season}/{file}.wav\")");
  auto components = parse_partition_format(format);
  if (!components.ok()) return components.error();
  std::vector<std::string> names;
  for (const auto& component : *components)
    for (const auto& piece : component)
      if (piece.placeholder) names.push_back(piece.text);
  std::vector<std::size_t> key_index;
  for (const auto& key : keys) {
    auto found = std::find(names.begin(), names.end(), key);
    if (found == names.end())
      return invalid("parallel_run.partition_keys: " + key +
                     " is not a {name} of "
                     "partition_format \"" +
                     format + "\"");
    key_index.push_back(static_cast<std::size_t>(found - names.begin()));
  }
  std::map<std::vector<std::string>, std::size_t> batch_of;
  std::vector<MiniBatch> batches;
  for (const auto& file : files) {
    // The format matches the path's last components, one for one.
    std::vector<std::string> parts;
    for (const auto& part : file) parts.push_back(part.string());
    std::vector<std::string> values;
    bool matched = parts.size() >= components->size();
    for (std::size_t c = 0; matched && c < components->size(); ++c) {
      const std::string& part = parts[parts.size() - components->size() + c];
      matched = match_component((*components)[c], part, values);
    }
    if (!matched)
      return invalid("parallel_run.partition_format: " + file.generic_string() +
                     " does not match \"" + format + "\"");
    std::vector<std::string> key_values;
    for (auto index : key_index) key_values.push_back(values[index]);
    auto [at, added] = batch_of.emplace(key_values, batches.size());
    if (added) {
      batches.emplace_back();
      for (std::size_t k = 0; k < keys.size(); ++k)
        batches.back().partition.emplace_back(keys[k], key_values[k]);
    }
    MiniBatch& batch = batches[at->second];
    batch.files.push_back(file);
    batch.items += 1;
    std::vector<std::pair<std::string, std::string>> columns;
    for (std::size_t n = 0; n < names.size(); ++n) columns.emplace_back(names[n], values[n]);
    batch.file_columns.push_back(std::move(columns));
  }
  return batches;
}

Result<std::vector<MiniBatch>> split_table(const std::vector<fs::path>& files,
                                           std::uint64_t batch_bytes, TableFormat format) {
  std::vector<MiniBatch> batches;
  for (const auto& file : files) {
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return invalid(file.string() + ": cannot be opened");
    std::uint64_t size = static_cast<std::uint64_t>(::lseek(fd, 0, SEEK_END));
    std::uint64_t header_end = 0;
    if (format.splittable && format.header) {
      auto end = next_line_start(fd, 0, size, file);
      if (!end.ok()) {
        ::close(fd);
        return end.error();
      }
      header_end = *end;
    }
    std::uint64_t begin = header_end;
    while (begin < size) {
      std::uint64_t end = size;
      if (format.splittable && size - begin > batch_bytes) {
        // The row that holds the cut point ends this mini-batch.
        auto cut = next_line_start(fd, begin + batch_bytes - 1, size, file);
        if (!cut.ok()) {
          ::close(fd);
          return cut.error();
        }
        end = *cut;
      }
      MiniBatch batch;
      batch.slice = TableSlice{file, header_end, begin, end};
      batches.push_back(std::move(batch));
      begin = end;
    }
    ::close(fd);
  }
  return batches;
}

}  // namespace amlnode::parallel
