// A program that starts a spawn (or forkserver) child after its own
// executable file was replaced on disk (conformance/start_methods_test.cc
// runs it): mp re-executes the running image (/proc/self/exe), not the
// path, so the child still runs this program's code.
//
//   replaced_executable DIR METHOD   waits until DIR/go exists, then starts
//                                    one child and prints its exit code
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "mp/context.h"

void child_task(int code) { mp::exit(code); }

int main(int argc, char** argv) {
  mp::freeze_support();
  if (argc < 3) return 2;
  const std::string go = std::string(argv[1]) + "/go";
  while (::access(go.c_str(), F_OK) != 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  try {
    mp::Process p = mp::get_context(argv[2]).Process(child_task, 42);
    p.start();
    p.join();
    std::printf("child exit code %d\n", p.exitcode().value_or(-1000));
    return 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 3;
  }
}
