#pragma once

// Staging a run's inputs (data references) into its run folder. Locally, `mount` makes a link to
// the path, `download` copies it, and `upload` points the run at the path itself, so results the
// run writes there are where the user expects them.

#include <filesystem>
#include <vector>

#include "common/result.h"
#include "executors/plan.h"

namespace amlnode::executors {

// Each place made outside the run folder (an absolute path_on_compute) is recorded, one a line, in
// `made_outside` (a file in the run folder) as soon as it is made, so that only those are removed
// when the run is over, whatever happened in between (a restart of the agent included).
Result<void> stage_inputs(const std::vector<StagedInput>& inputs,
                          const std::filesystem::path& made_outside);

// Removes the places recorded in `made_outside`; what is inside the run folder goes with it.
void unstage_inputs(const std::filesystem::path& made_outside);

}  // namespace amlnode::executors
