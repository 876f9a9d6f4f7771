#include "mp/internal/lifecycle.h"

#include <cstdlib>
#include <mutex>

namespace mp::internal {
namespace {

// At normal program exit (return from main, std::exit) run the duties.
struct RunAtExit {
  ~RunAtExit() { finalize_process(); }
} g_run_at_exit;

}  // namespace

void run_finalizers_at_exit() { finalize_process(); }

void add_finalizer(void (*fn)(), FinalizerPhase phase) noexcept {
  LifecycleState& s = lifecycle_state();
  {
    std::lock_guard lock(s.mu);
    for (std::size_t i = 0; i < s.count; ++i) {
      if (s.fns[i] == fn) return;
    }
    if (s.count == LifecycleState::kMaxFinalizers) return;
    s.fns[s.count] = fn;
    s.phases[s.count] = phase;
    ++s.count;
  }
  // Runs before the destructors of every static built so far (the last
  // registration runs first; finalize_process runs once).
  std::atexit(run_finalizers_at_exit);
}

void finalize_process() noexcept {
  LifecycleState& s = lifecycle_state();
  // Copied to the stack, not to the heap: this runs at the end of every
  // forked child, where each heap page written costs a fault.
  void (*fns[LifecycleState::kMaxFinalizers])();
  FinalizerPhase phases[LifecycleState::kMaxFinalizers];
  std::size_t n = 0;
  {
    std::lock_guard lock(s.mu);
    if (s.done) return;
    s.done = true;
    for (; n < s.count; ++n) {
      fns[n] = s.fns[n];
      phases[n] = s.phases[n];
    }
  }
  for (FinalizerPhase phase : {FinalizerPhase::kThreads, FinalizerPhase::kChildren}) {
    for (std::size_t i = n; i > 0; --i) {
      if (phases[i - 1] != phase) continue;
      try {
        fns[i - 1]();
      } catch (...) {
      }
    }
  }
}

}  // namespace mp::internal
