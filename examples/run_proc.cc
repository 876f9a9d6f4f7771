// Tutorial: run_proc in a child process, with start()/join(), and without
// join() (the parent goes on at once; mp still reaps the child at exit).
//   bazel run //examples:run_proc
#include <fmt/format.h>

#include <chrono>
#include <string>
#include <thread>

#include "mp/os.h"
#include "mp/process.h"

void run_proc(const std::string& name) {
  fmt::print("Run child process {} ({})...\n", name, mp::getpid());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  fmt::print("Child process {} ends.\n", name);
}

int main() {
  fmt::print("Parent process {}.\n", mp::getpid());
  mp::Process p(run_proc, std::string("test"));
  fmt::print("Child process will start.\n");
  p.start();
  p.join();
  fmt::print("Child process end.\n\n");

  // Without join(): "Parent done" is printed first; the child finishes
  // afterwards, and the program waits for it at exit as CPython does.
  mp::Process q(run_proc, std::string("no-join"));
  q.start();
  fmt::print("Parent done without join().\n");
}
