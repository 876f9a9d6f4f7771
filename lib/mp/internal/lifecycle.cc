#include "mp/internal/lifecycle.h"

#include <pthread.h>

#include <algorithm>
#include <mutex>
#include <vector>

namespace mp::internal {
namespace {

struct Finalizers {
  std::mutex mu;
  std::vector<void (*)()> fns;  // guarded by mu
  bool done = false;            // guarded by mu
};

Finalizers& finalizers() {
  // Leaked on purpose: used from static destructors and after fork.
  static Finalizers* f = [] {
    auto* p = new Finalizers;
    pthread_atfork(nullptr, nullptr, [] {
      // The child has one thread: the mutex may have been held by another
      // thread of the parent at fork time, so it is rebuilt, and the child
      // gets its own end-of-process duties.
      Finalizers& self = finalizers();
      new (&self.mu) std::mutex;
      self.done = false;
    });
    return p;
  }();
  return *f;
}

// At normal program exit (return from main, std::exit) run the duties.
struct RunAtExit {
  ~RunAtExit() { finalize_process(); }
} g_run_at_exit;

}  // namespace

void add_finalizer(void (*fn)()) noexcept {
  Finalizers& f = finalizers();
  std::lock_guard lock(f.mu);
  if (std::find(f.fns.begin(), f.fns.end(), fn) == f.fns.end()) f.fns.push_back(fn);
}

void finalize_process() noexcept {
  Finalizers& f = finalizers();
  std::vector<void (*)()> fns;
  {
    std::lock_guard lock(f.mu);
    if (f.done) return;
    f.done = true;
    fns = f.fns;
  }
  for (auto it = fns.rbegin(); it != fns.rend(); ++it) {
    try {
      (*it)();
    } catch (...) {
    }
  }
}

}  // namespace mp::internal
