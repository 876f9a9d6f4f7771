// Tutorial: Process attributes — name (default and custom 'dongGe'),
// is_alive(), pid(), join().
//   bazel run //examples:process_attributes
#include <fmt/format.h>

#include <chrono>
#include <thread>

#include "mp/os.h"
#include "mp/process.h"

void worker_1(int interval) {
  fmt::print("worker_1 ({}, parent {}) starts\n", mp::getpid(), mp::getppid());
  std::this_thread::sleep_for(std::chrono::seconds(interval));
  fmt::print("worker_1 ends\n");
}

void worker_2(int interval) {
  fmt::print("worker_2 ({}, parent {}) starts\n", mp::getpid(), mp::getppid());
  std::this_thread::sleep_for(std::chrono::seconds(interval));
  fmt::print("worker_2 ends\n");
}

int main() {
  fmt::print("main process {}\n", mp::getpid());
  mp::Process p1(worker_1, 2);
  mp::Process p2(mp::ProcessOptions{.name = "dongGe"}, worker_2, 1);
  p1.start();
  p2.start();
  fmt::print("p1 is_alive={} name={} pid={}\n", p1.is_alive(), p1.name(), *p1.pid());
  fmt::print("p2 is_alive={} name={} pid={}\n", p2.is_alive(), p2.name(), *p2.pid());
  fmt::print("{}\n{}\n", p1, p2);
  p1.join();
  p2.join();
  fmt::print("p1 is_alive={} exitcode={}\n", p1.is_alive(), *p1.exitcode());
  fmt::print("{}\n", p1);
}
