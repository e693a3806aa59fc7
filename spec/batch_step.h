#pragma once

// AzureBatchStep in the native shape (`azure_batch_step`, docs/batch.md): its parameters, and the
// rules of a job that is one.

#include <functional>
#include <optional>
#include <set>
#include <string>

#include "spec/job.h"
#include "spec/reader.h"

namespace amlnode::spec::detail {

// AzureBatchStep's parameters, each checked; an unknown one is an error. Of the four that only
// describe a pool to create, create_pool and delete_batch_pool_after_finish are refused unless
// false, and vm_size and vm_image_urn whenever given: the pool is attached, and amlnode neither
// creates nor deletes it. nullopt when anything was wrong.
std::optional<BatchTask> read_batch_step(const Field& field, Reader& reader);

// A job that is an AzureBatchStep: no other top-level field than those a Batch task has, its
// inputs and outputs matched with the job's inputs, and nothing of a Python environment (the
// executable runs on the pool's node as it is). `given` are the top-level fields given.
void check_batch_job(const std::set<std::string, std::less<>>& given, Job& job,
                     Diagnostics& diagnostics);

}  // namespace amlnode::spec::detail
