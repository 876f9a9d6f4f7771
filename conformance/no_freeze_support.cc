// A program that uses the spawn start method and forgets mp::freeze_support()
// (conformance/start_methods_test.cc runs it). Its spawned child runs this
// main() again: it must not start a child of its own (no second
// generation), and the parent's start() must raise mp::ProcessError saying
// what is missing.
//
//   no_freeze_support start    the child's main() reaches Process::start()
//   no_freeze_support return   the child's main() returns at once
#include <cstdio>
#include <cstdlib>
#include <string>

#include "mp/context.h"

void nothing() {}

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "start";
  // Set by the parent before it starts the child, so the child sees it.
  if (std::getenv("NO_FREEZE_CHILD") && mode == "return") return 0;
  ::setenv("NO_FREEZE_CHILD", "1", 1);
  try {
    mp::Process p = mp::get_context(argc > 2 ? argv[2] : "spawn").Process(nothing);
    p.start();
    p.join();
    std::printf("started: exitcode %d\n", p.exitcode().value_or(-1000));
    return 0;
  } catch (const mp::ProcessError& e) {
    std::printf("ProcessError: %s\n", e.what());
    return 3;
  }
}
