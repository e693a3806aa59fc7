#pragma once

// Keeping the idle daemon small (issue 5: under 8 MB resident). glibc's allocator is tuned for
// throughput, not for a long-lived process that is idle most of the time:
//
// - every thread that allocates gets an arena of its own (up to 8 per core), and memory freed in
//   an arena mostly stays resident there; the daemon's few worker threads need no parallel
//   allocation, so two arenas are plenty;
// - the threshold above which a block is mmap'ed (and so returned to the kernel on free) grows
//   to the largest block freed so far, up to 32 MiB: after one 4 MiB log chunk, every later one
//   comes from the heap and stays there. A fixed threshold keeps large buffers in mmap.

namespace amlnode::agent {

// Called once at the daemon's start, before its threads exist.
void tune_allocator_for_daemon();

// Gives memory the idle node does not need back to the kernel: the allocator's free memory
// (malloc_trim), and the pages of code and read-only data that start-up, preparing runs and
// delivering their logs touched (unmapped with MADV_DONTNEED from the read-only, never-written file
// mappings only; they stay in the page cache and a page used again is mapped again, a minor fault).
// Called when the node becomes idle (one read of /proc/self/smaps, one madvise per mapping).
void release_free_memory();

}  // namespace amlnode::agent
