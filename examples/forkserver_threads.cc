// Tutorial: child processes from a program that runs threads. fork() copies
// only the calling thread; a lock another thread held at that moment (the
// allocator's, stdio's, a logger's) stays held forever in the child. The
// forkserver start method forks children from a single-threaded server
// started at the top of main, so the program's threads cannot be caught
// holding anything; CPython made it the default on Linux in 3.14.
//   bazel run //examples:forkserver_threads
#include <fmt/format.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "mp/context.h"

// A target is data under forkserver: a function, and arguments that travel
// (an int, a string, and the queue itself, passed by std::ref).
void work(int id, std::string label, mp::Queue<std::string>& results) {
  std::vector<int> v(1000, id);  // the child allocates freely
  results.put(fmt::format("{} {} done in pid {} (parent {})", label, id, mp::getpid(),
                          mp::parent_process()->pid()));
}

int main() {
  // In a child started by forkserver or spawn this runs the child's task
  // (or the server) and never returns; here it returns at once.
  mp::freeze_support();
  // Start the server while the program still has one thread.
  mp::forkserver::ensure_running();

  // Background threads that allocate and print all the time, as a logger or
  // a thread pool would.
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (int t = 0; t < 4; ++t) {
    busy.emplace_back([&stop] {
      FILE* sink = std::fopen("/dev/null", "w");
      while (!stop.load()) {
        void* p = std::malloc(256);
        std::fprintf(sink, "%p\n", p);
        std::free(p);
      }
      std::fclose(sink);
    });
  }

  auto ctx = mp::get_context("forkserver");
  mp::Queue<std::string> results;
  std::vector<mp::Process> children;
  for (int i = 0; i < 8; ++i) children.push_back(ctx.Process(work, i, "task", std::ref(results)));
  for (auto& p : children) p.start();
  for (std::size_t i = 0; i < children.size(); ++i) fmt::print("{}\n", results.get());
  for (auto& p : children) p.join();

  stop = true;
  for (auto& t : busy) t.join();
  int ok = 0;
  for (auto& p : children) ok += p.exitcode() == 0;
  fmt::print("{} of {} children exited cleanly; the program ran {} threads meanwhile\n", ok,
             children.size(), busy.size() + 1);
}
