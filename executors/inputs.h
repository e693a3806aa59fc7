#pragma once

// Staging a run's inputs (data references) into its run folder. Locally, `mount` makes a link to
// the path, `download` copies it, and `upload` points the run at the path itself, so results the
// run writes there are where the user expects them.

#include <vector>

#include "common/result.h"
#include "executors/plan.h"

namespace amlnode::executors {

Result<void> stage_inputs(const std::vector<StagedInput>& inputs);

}  // namespace amlnode::executors
