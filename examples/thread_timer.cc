// mp::Timer, mp::local and mp::excepthook in a few lines: a reminder that
// fires, one that is cancelled, a per-thread counter, and a failing thread
// whose exception is reported by a custom hook.
//
//   bazel run //examples:thread_timer
#include <fmt/format.h>

#include <chrono>
#include <exception>
#include <stdexcept>

#include "mp/threading.h"

using namespace std::chrono_literals;

int main() {
  mp::Timer reminder(300ms, [] { fmt::print("reminder fired in {}\n", mp::current_thread()); });
  mp::Timer cancelled(10s, [] { fmt::print("never printed\n"); });
  reminder.start();
  cancelled.start();
  cancelled.cancel();
  reminder.join();
  cancelled.join();

  mp::local<int> calls;  // 0 in every thread, on first use
  auto count = [&](int n) {
    for (int i = 0; i < n; ++i) ++*calls;
    fmt::print("{} counted {}\n", mp::current_thread().name(), *calls);
  };
  mp::Thread a(mp::named("count", count), 3);
  mp::Thread b(mp::named("count", count), 5);
  a.start();
  b.start();
  a.join();
  b.join();
  fmt::print("main thread's own count: {}\n", *calls);

  mp::set_excepthook([](const mp::ExceptHookArgs& args) {
    try {
      std::rethrow_exception(args.exception);
    } catch (const std::exception& e) {
      fmt::print("hook: {} failed: {}\n", args.thread.name(), e.what());
    }
  });
  mp::Thread failing([] { throw std::runtime_error("no route to host"); });
  failing.start();
  failing.join();  // does not rethrow
  fmt::print("threads alive now: {}\n", mp::active_count());
}
