#pragma once

// Snapshot and outputs archives: the tar.gz files that carry a job's source_directory from the
// submitting machine to the node, and a run's ./outputs back. amlnode writes them (pax tar,
// gzip) and reads only what it writes; docs/snapshots.md has the format and the rules.
//
// Extraction treats every archive as hostile: an entry that would land outside the destination
// (absolute paths, `..`, links that leave the folder, writing through a link), a special file, or
// an archive over the size, count or compression-ratio limits is refused, and a refused archive
// leaves nothing behind.
//
// Error codes: "UnsafeArchive" (an entry that could escape the destination or is not a plain
// file, folder or link; the message names the entry), "ArchiveTooLarge" (a limit was reached),
// "InvalidArchive" (not a tar.gz, corrupt or truncated), "ArchiveFailed" (the file system:
// unreadable source, destination in the way, disk full).

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "executors/snapshot.h"

namespace amlnode::executors {

// What an archive holds, as packed or as extracted.
struct ArchiveStats {
  std::size_t files = 0;            // regular files and links
  std::size_t directories = 0;      // folders (the root itself not counted)
  std::uint64_t bytes = 0;          // uncompressed content bytes
  std::uint64_t archive_bytes = 0;  // size of the tar.gz
  // pack_directory only: entries it left out because they cannot travel (links that point outside
  // the folder, FIFOs, sockets, devices), as paths relative to the folder.
  std::vector<std::string> left_out;
};

// Limits that extraction enforces while it reads. Sizes count the bytes actually written (the
// logical size of each file, holes included), never only what a header claims.
struct ExtractLimits {
  std::uint64_t max_total_bytes = 300ull << 20;  // Azure ML's snapshot limit
  std::uint64_t max_entry_bytes = 300ull << 20;  // one file
  std::size_t max_files = 2000;                  // Azure ML's snapshot limit
  std::size_t max_directories = 10000;           // folders are not in Azure ML's count
  // Output bytes per compressed input byte. gzip reaches about 1000:1 on zeros; source code and
  // data compress 2 to 20 times. Checked only once `ratio_floor_bytes` have been written, so a
  // small archive of a few zero-filled files is not refused.
  std::uint64_t max_ratio = 200;
  std::uint64_t ratio_floor_bytes = 16ull << 20;
};

// Packs exactly `listing` (from list_snapshot, so `.amlignore` is already honoured) of `source`
// into `out_tar_gz`, replaced atomically (mode 0600: a snapshot may hold secrets). Files, folders
// and symbolic links (as links) keep their permission bits and whole-second modification times;
// owners are zeroed and entries follow the listing's order, so the same folder packs to the same
// bytes whoever packs it. A link that extraction would refuse (absolute, or climbing out of the
// folder) is an "UnsafeArchive" error naming it, at submit time rather than on the node. Memory:
// one 64 KiB read buffer plus libarchive's gzip state.
Result<ArchiveStats> pack_snapshot(const std::filesystem::path& source,
                                   const SnapshotListing& listing,
                                   const std::filesystem::path& out_tar_gz);

// Why a symbolic link of a snapshot (at `relative`, pointing at `target`) cannot travel with it:
// it is absolute or climbs out of the folder, so extraction on the node would refuse it. nullopt
// for a link that stays inside. `amlnode submit` (packing) and `amlnode run` (copying) refuse the
// same links with this text.
std::optional<std::string> unsafe_snapshot_link(std::string_view relative,
                                                const std::filesystem::path& target);

// A tar.gz held in memory.
struct PackedArchive {
  std::string data;
  ArchiveStats stats;
};

// pack_snapshot into memory, for callers that send the archive straight away. An archive that
// would grow past `max_archive_bytes` is an "ArchiveTooLarge" error: memory never exceeds the cap
// plus one 64 KiB block.
Result<PackedArchive> pack_snapshot_to_memory(const std::filesystem::path& source,
                                              const SnapshotListing& listing,
                                              std::size_t max_archive_bytes);

// Packs everything under `folder` (a run's ./outputs): no ignore files, in sorted order, under
// `limits` ("ArchiveTooLarge" beyond). Links that point outside the folder and special files are
// left out and listed in ArchiveStats::left_out rather than failing the run's outputs.
Result<ArchiveStats> pack_directory(const std::filesystem::path& folder,
                                    const std::filesystem::path& out_tar_gz,
                                    const SnapshotLimits& limits = {});

// Extracts the tar.gz `tar_gz` into `destination`, which must not exist or be an empty folder.
// Everything is written into a temporary folder beside `destination` and renamed into place only
// once the whole archive has been checked and written; on any error that folder is removed and
// `destination` is untouched. The extracted root folder gets mode 0755. The input is read in
// 64 KiB blocks.
Result<ArchiveStats> extract_snapshot(const std::filesystem::path& tar_gz,
                                      const std::filesystem::path& destination,
                                      const ExtractLimits& limits = {});

// extract_snapshot from bytes already in memory (a response body the caller holds anyway).
Result<ArchiveStats> extract_snapshot_from_memory(std::string_view tar_gz,
                                                  const std::filesystem::path& destination,
                                                  const ExtractLimits& limits = {});

}  // namespace amlnode::executors
