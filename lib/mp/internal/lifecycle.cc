#include "mp/internal/lifecycle.h"

#include <mutex>

namespace mp::internal {
namespace {

// At normal program exit (return from main, std::exit) run the duties.
struct RunAtExit {
  ~RunAtExit() { finalize_process(); }
} g_run_at_exit;

}  // namespace

void add_finalizer(void (*fn)()) noexcept {
  LifecycleState& s = lifecycle_state();
  std::lock_guard lock(s.mu);
  for (std::size_t i = 0; i < s.count; ++i) {
    if (s.fns[i] == fn) return;
  }
  if (s.count < LifecycleState::kMaxFinalizers) s.fns[s.count++] = fn;
}

void finalize_process() noexcept {
  LifecycleState& s = lifecycle_state();
  // Copied to the stack, not to the heap: this runs at the end of every
  // forked child, where each heap page written costs a fault.
  void (*fns[LifecycleState::kMaxFinalizers])();
  std::size_t n = 0;
  {
    std::lock_guard lock(s.mu);
    if (s.done) return;
    s.done = true;
    for (; n < s.count; ++n) fns[n] = s.fns[n];
  }
  while (n > 0) {
    try {
      fns[--n]();
    } catch (...) {
    }
  }
}

}  // namespace mp::internal
