// mp/internal/lifecycle.h — what mp does at a process's end.
//
// CPython runs, at the end of every process, threading._shutdown (join the
// non-daemon threads) and multiprocessing.util._exit_function (terminate
// daemonic children, join the others). mp modules register the same duties
// here; they run once, in reverse order of registration, from mp::exit(),
// at the end of an mp child process, and from a static destructor at normal
// program exit.
#pragma once

namespace mp::internal {

// flush_stdio flushes C stdio and the standard C++ streams.
void flush_stdio() noexcept;

// add_finalizer registers `fn` to run once at the end of this process.
// Registration is idempotent per function. Thread-safe.
void add_finalizer(void (*fn)()) noexcept;

// finalize_process runs every registered finalizer, newest first, once;
// later calls do nothing. A forked child starts with the list re-armed.
void finalize_process() noexcept;

}  // namespace mp::internal
