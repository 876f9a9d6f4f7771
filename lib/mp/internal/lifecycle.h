// mp/internal/lifecycle.h — what mp does at a process's end.
//
// CPython runs, at the end of every process, threading._shutdown (join the
// non-daemon threads) and then, among the atexit handlers,
// multiprocessing.util._exit_function (terminate daemonic children, join the
// others). mp modules register the same duties here, each in a phase; they
// run once — phase by phase (threads first, as CPython), newest first within
// a phase — from mp::exit(), at the end of an mp child process, and at normal
// program exit through std::atexit (registered again at each registration,
// so the duties run before the destruction of statics built before it; a
// static destructor is the last resort).
#pragma once

#include <atomic>
#include <cstddef>
#include <thread>

namespace mp::internal {

// LifecycleState is the registry of end-of-process duties. It lives inside
// the process module's per-process globals (lifecycle_state(), defined in
// process.cc) so that a forked child re-arms it on the one page it writes
// anyway: each page a child writes costs a copy-on-write fault.
// FinalizerPhase orders the duties: every kThreads duty runs before any
// kChildren duty, and every kChildren duty before any kServers duty (the
// forkserver, which reports the exit of the children joined before it).
enum class FinalizerPhase : int { kThreads = 0, kChildren = 1, kServers = 2 };

// SpinLock guards LifecycleState: held only to register a duty or to mark
// the list done, so it is never held long. Its code is inline: a forked child
// that ends takes it, and std::mutex would pull pthread_mutex_lock's page
// of libc into every child (one more fault, ~25 us here).
class SpinLock {
 public:
  void lock() noexcept {
    while (held_.exchange(true, std::memory_order_acquire)) {
      while (held_.load(std::memory_order_relaxed)) std::this_thread::yield();
    }
  }
  void unlock() noexcept { held_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> held_{false};
};

struct LifecycleState {
  static constexpr std::size_t kMaxFinalizers = 32;
  SpinLock mu;                         // guards the fields below
  void (*fns[kMaxFinalizers])() = {};  // registered duties, oldest first
  FinalizerPhase phases[kMaxFinalizers] = {};
  std::size_t count = 0;
  bool done = false;  // finalize_process() ran here
};

// lifecycle_state() is this process's registry; a forked child gets a
// re-armed one (unlocked, not done, same duties).
LifecycleState& lifecycle_state() noexcept;

// flush_stdio flushes C stdio and the standard C++ streams.
void flush_stdio() noexcept;

// add_finalizer registers `fn` to run once at the end of this process, in
// `phase`. Registration is idempotent per function. Thread-safe.
void add_finalizer(void (*fn)(), FinalizerPhase phase = FinalizerPhase::kChildren) noexcept;

// finalize_process runs every registered finalizer, newest first, once;
// later calls do nothing. A forked child starts with the list re-armed.
void finalize_process() noexcept;

}  // namespace mp::internal
