// Tutorial: downloading two files one after the other, then in two processes.
// A "download" sleeps 1-3 s; two processes take about max, not sum.
//   bazel run //examples:sequential_vs_processes
#include <fmt/format.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>

#include "mp/os.h"
#include "mp/process.h"

namespace {

void download_task(const std::string& filename) {
  fmt::print("{} started downloading {}...\n", mp::getpid(), filename);
  std::mt19937 rng(std::random_device{}());
  int secs = std::uniform_int_distribution<int>(1, 3)(rng);
  std::this_thread::sleep_for(std::chrono::seconds(secs));
  fmt::print("{} finished downloading {} in {} s\n", filename, filename, secs);
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main() {
  auto start = std::chrono::steady_clock::now();
  download_task("Python.pdf");
  download_task("Peking Hot.avi");
  fmt::print("sequential: total {:.2f} s\n\n", seconds_since(start));

  start = std::chrono::steady_clock::now();
  mp::Process p1(download_task, std::string("Python.pdf"));
  mp::Process p2(download_task, std::string("Peking Hot.avi"));
  p1.start();
  p2.start();
  p1.join();
  p2.join();
  fmt::print("two processes: total {:.2f} s\n", seconds_since(start));
}
