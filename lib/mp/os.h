// mp/os.h — fork(), process ids, cpu_count() and wait-status decoding.
//
// Mirrors CPython's os.fork(), os.getpid(), os.getppid(),
// os.process_cpu_count() (3.13; multiprocessing.cpu_count() ignores the
// affinity mask, mp does not) and the exit-code convention of
// multiprocessing.Process.exitcode (n for exit(n), -N for death by signal N).
//
// stdio contract: mp::fork() flushes stdout, stderr and the standard C++
// streams before forking (CPython flushes sys.stdout and sys.stderr), and
// mp's children leave with _exit() after flushing their own, so text
// written (even buffered) to them before a fork appears exactly once. Other
// FILE* streams are the program's to flush before forking. A raw ::fork()
// gives no such promise.
//
// Threads: forking while other threads run leaves the child with one thread.
// mp::fork() writes a one-time warning to stderr when it sees more than one
// thread (as CPython 3.12 does); set_fork_warning(false) turns it off.
#pragma once

// mp's headers are C++20 (concepts, designated initialisers). Without it a
// compiler would print pages of errors; say what to do instead.
#if __cplusplus < 202002L
#error \
    "mp needs C++20: compile with -std=c++20 (Bazel: copts = [\"-std=c++20\"] on the target that includes mp, or build --cxxopt=-std=c++20 in .bazelrc; CMake and pkg-config add it for you)"
#include "mp: stopped here, see the error above"  // a missing file ends the compile
#endif

#include <sys/types.h>

namespace mp {

// fork() creates a child process. It returns twice: 0 in the child and the
// child's pid in the parent. Throws std::system_error when fork(2) fails.
// Stdio is flushed first (see above). Prefer mp::Process, which also reaps
// the child; a pid from fork() is the caller's to wait for.
pid_t fork();

// getpid() is the calling process's id.
pid_t getpid() noexcept;

// getppid() is the parent's id (1 or a subreaper's pid once the parent died).
pid_t getppid() noexcept;

// cpu_count() is the number of CPUs this process may run on: the size of its
// affinity mask (CPython 3.13's process_cpu_count()), at least 1.
int cpu_count() noexcept;

// exitcode_from_wait_status() decodes a waitpid() status the way
// Process::exitcode() reports it: exit code n gives n, death by signal N
// gives -N. Statuses of stopped or continued children give 0.
int exitcode_from_wait_status(int status) noexcept;

// exit() ends the calling process with `code` (taken mod 256): it flushes
// stdio, then does what CPython does at the end of a process — terminates
// daemonic children and joins the others — and leaves with _exit(), running
// no atexit handlers or static destructors inherited from a parent.
[[noreturn]] void exit(int code);

// set_fork_warning() turns the one-time "forking with several threads"
// warning on (the default) or off.
void set_fork_warning(bool enabled) noexcept;

}  // namespace mp
