// mp/internal/pool_worker.h — the loop a Pool worker process runs.
// Internal: users include mp/pool.h.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>

#include "mp/internal/pool_channel.h"

namespace mp::internal::pool {

// WorkerConfig is everything a worker needs; it is copied into the child by
// fork(), so the pointers refer to the child's copy of the pool's memory
// (initializer) or to the shared region (channels).
struct WorkerConfig {
  Channels channels;
  std::size_t slot = 0;
  std::uint64_t max_tasks = 0;  // 0: unlimited
  const std::function<void()>* initializer = nullptr;
  pid_t parent = 0;
};

// worker_main runs the initializer, then claims and runs tasks until the
// pool closes, max_tasks tasks ran, or the pool process is gone. It touches
// only the shared region and its own memory (no lock of the parent).
void worker_main(const WorkerConfig& config);

// describe_current_exception appends encode(tuple<type name, message>) of
// the exception being handled to `out`. Call inside a catch block.
void describe_current_exception(std::string& out);

}  // namespace mp::internal::pool
