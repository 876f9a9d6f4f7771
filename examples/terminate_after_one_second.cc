// Tutorial: a child that would loop forever is terminated after one second.
//   bazel run //examples:terminate_after_one_second
#include <fmt/format.h>

#include <chrono>
#include <thread>

#include "mp/os.h"
#include "mp/process.h"

int main() {
  mp::Process p([] {
    for (int i = 0;; ++i) {
      fmt::print("child {} working... {}\n", mp::getpid(), i);
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  p.start();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  p.terminate();
  p.join();
  fmt::print("child terminated: exitcode {} ({})\n", *p.exitcode(), p);
}
