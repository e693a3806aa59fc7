#pragma once

// How a ParallelRunStep's inputs are cut into mini-batches (docs/parallel-run.md):
//   - a file dataset (a folder, or files): each file is one item, `mini_batch_size` files to a
//     mini-batch (default 10), in path order;
//   - a tabular dataset of delimited or JSON-lines files: about `mini_batch_size` bytes of rows to
//     a mini-batch (default 1 MiB), cut at line ends, never across files; a delimited file's
//     header line is every mini-batch's of that file, not a row. A parquet file is one mini-batch
//     (its rows cannot be cut by bytes).
// Reading is bounded: a cut looks at most kMaxLineBytes past its offset for a line end.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace amlnode::parallel {

enum class InputKind { Files, Table };

// Part of one table file: its header (the first line, for delimited files with one) and the
// rows in the bytes [begin, end).
struct TableSlice {
  std::filesystem::path file;
  std::uint64_t header_end = 0;  // bytes [0, header_end) are the header line; 0 for none
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

struct MiniBatch {
  std::vector<std::filesystem::path> files;  // InputKind::Files
  std::optional<TableSlice> slice;           // InputKind::Table
  // Items in it: files, or a table slice's rows once counted (0 until the worker reads it).
  std::int64_t items = 0;
  // By partition keys: each key's value for this mini-batch (run()'s
  // mini_batch_context.partition_key_value), in partition_keys' order.
  std::vector<std::pair<std::string, std::string>> partition;
  // By partition keys: every placeholder's value of each file (files[i]'s at i), which a tabular
  // dataset's rows gain as columns, as partition_format adds them in Azure ML.
  std::vector<std::vector<std::pair<std::string, std::string>>> file_columns;
};

inline constexpr std::int64_t kDefaultFilesPerBatch = 10;
inline constexpr std::uint64_t kDefaultBatchBytes = 1 << 20;
// A line longer than this is refused (the file is not a table a mini-batch can be cut from).
inline constexpr std::uint64_t kMaxLineBytes = 16 << 20;

// `mini_batch_size` as the SDK reads it: a file count for files ("10" or 10); for tables a size,
// digits with an optional KB, MB or GB (any case, 1024-based), "1024" being bytes. Errors say
// what was expected.
Result<std::uint64_t> parse_mini_batch_size(const std::string& text, InputKind kind);

// The files of an input in path order: the file itself, or every regular file below a folder
// (links are not followed out of it).
Result<std::vector<std::filesystem::path>> input_files(const std::filesystem::path& input);

std::vector<MiniBatch> split_files(const std::vector<std::filesystem::path>& files,
                                   std::uint64_t files_per_batch);

// A file dataset by partition keys: one mini-batch per distinct combination of `keys`' values,
// read from each file's path through `format` (Dataset.File.from_files(partition_format=...),
// e.g. "data/{user}/{season}/{genres}.wav", matched against the end of the path). Mini-batches
// are in the order their first file comes, each its files in path order. A file the format does
// not match, a key the format does not have, and a `{key:format}` (date) placeholder are errors.
Result<std::vector<MiniBatch>> split_by_partition(const std::vector<std::filesystem::path>& files,
                                                  const std::string& format,
                                                  const std::vector<std::string>& keys);

struct TableFormat {
  bool header = true;      // delimited files: the first line is the header
  bool splittable = true;  // false for parquet: a file is one mini-batch
};
Result<std::vector<MiniBatch>> split_table(const std::vector<std::filesystem::path>& files,
                                           std::uint64_t batch_bytes, TableFormat format);

}  // namespace amlnode::parallel
