// mp/internal/liveness.h — who am I, and is that process still alive?
//
// Internal. Shared by every module that records a process in shared memory
// and must later tell whether it died (lock owners, queue producers, pool
// workers): a pid alone is not enough, pids are reused, so a process is
// named by (pid, start time), the start time read from /proc/<pid>/stat.
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace mp::internal {

// self_pid is getpid(), cached (getpid is a real syscall, ~1 us here) and
// refreshed in a forked child.
pid_t self_pid() noexcept;

// self_tid is gettid(), cached per thread (refreshed in a forked child).
pid_t self_tid() noexcept;

// self_start_time is this process's start time in clock ticks since boot
// (/proc/self/stat field 22), cached; 0 if /proc is unreadable.
std::uint64_t self_start_time() noexcept;

// read_proc_stat reads /proc/<pid>/stat's state letter (field 3) and start
// time (field 22). False, with errno set, when the file cannot be read.
bool read_proc_stat(pid_t pid, char* state, std::uint64_t* start_time) noexcept;

// process_alive reports whether `pid` names a live, non-zombie process
// whose start time is `start_time` (compared on its low 32 bits; 0 means
// unknown: pid liveness only). A pid <= 0 is not alive. A process whose
// /proc entry exists but cannot be read counts as alive.
bool process_alive(pid_t pid, std::uint64_t start_time) noexcept;

}  // namespace mp::internal
