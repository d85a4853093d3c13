// Hooks into the streaming runtime for tests only (not part of the public RuntimeOptions): fault
// injection into its block readers, fixed rates instead of the start-up calibration, and the
// memory-pressure monitor switched off.
#pragma once

#include <functional>
#include <memory>

#include "runtime/planner.h"
#include "storage/block_reader.h"

namespace dcomp::runtime::internal {

struct TestHooks {
  // Wraps every reader the runtime opens (fault injection).
  std::function<std::unique_ptr<storage::BlockReader>(std::unique_ptr<storage::BlockReader>)>
      wrap_reader;
  const Rates* rates = nullptr;  // skip calibration and use these
  bool watch_pressure = true;    // re-plan on /proc/pressure/memory
};

}  // namespace dcomp::runtime::internal
