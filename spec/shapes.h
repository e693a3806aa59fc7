#pragma once

// The two accepted shapes, each read into the one Job model, and the rules they share.

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "spec/job.h"
#include "spec/load.h"
#include "spec/reader.h"
#include "spec/sections.h"
#include "spec/tree.h"

namespace amlnode::spec::detail {

struct LoadContext {
  std::filesystem::path job_file;  // absolute, lexically normal
  const LoadOptions& options;
};

// Whether a top-level mapping is a .runconfig rather than a native job file: it has at least one
// key only RunConfiguration writes (script, framework, environment, nodeCount, ...) and none that
// only the native shape has. Keys both shapes share (arguments, command) decide nothing.
bool looks_like_runconfig(const Node& root);

// Native job file; `root` is a mapping. Errors go to `reader`'s diagnostics.
Job read_native(const Node& root, const LoadContext& context, Reader& reader);

// A .runconfig; `root` is a mapping.
Job read_runconfig(const Node& root, const LoadContext& context, Reader& reader);

// Rules both shapes apply. Paths name fields in the shape's own spelling.

// The source directory: the override (`--source-dir`) when given, else `dir`. Records an error
// (under `path`, or `--source-dir` for the override) unless it is an existing directory.
std::optional<std::filesystem::path> settle_source_dir(const std::filesystem::path& dir,
                                                       const std::string& path,
                                                       const LoadOptions& options,
                                                       Diagnostics& diagnostics);

// Why a script cannot run on this node (a notebook, a Windows entry point), or nullopt.
std::optional<std::string> unrunnable_entry(std::string_view script);

void read_entry_script(const Field& field, const ShapeContext& context, Job& job);

// `command`: a shell command; a list's items are joined with spaces into one line, as the SDK's
// ScriptRunConfig joins them.
void read_command(const Field& field, Reader& reader, Job& job);

// Exactly one of the script and the command; a command carries its own arguments.
struct WhatToRun {
  std::string script_key;  // "entry_script" or "script"
  std::string command_key;
  bool script_given = false;
  bool command_given = false;
  std::vector<std::string> argument_fields;  // the given fields that add arguments
};
void check_what_to_run(const WhatToRun& what, Diagnostics& diagnostics);

// PyTorch's process_count is the total over all nodes; the launcher starts the same number on
// each node, so it must divide evenly.
void split_process_count(Job& job, const std::string& path, Diagnostics& diagnostics);

// Finishing touches: the default base image (CPU, or GPU when the job uses a GPU) when neither
// an image nor a Dockerfile is given, and the experiment name from the source folder.
void apply_defaults(Job& job);

}  // namespace amlnode::spec::detail
