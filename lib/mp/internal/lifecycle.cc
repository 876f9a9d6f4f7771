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
  // The duties are run from the registry itself, not from a copy: entries
  // are only ever appended, so the first n stay as they are once `done` is
  // set, and a copy (a memcpy) would pull one more page of libc into every
  // forked child at its end (~25 us a fault here).
  std::size_t n = 0;
  {
    std::lock_guard lock(s.mu);
    if (s.done) return;
    s.done = true;
    n = s.count;
  }
  for (int phase = 0; phase <= static_cast<int>(FinalizerPhase::kServers); ++phase) {
    for (std::size_t i = n; i > 0; --i) {
      if (static_cast<int>(s.phases[i - 1]) != phase) continue;
      try {
        s.fns[i - 1]();
      } catch (...) {
      }
    }
  }
}

}  // namespace mp::internal
