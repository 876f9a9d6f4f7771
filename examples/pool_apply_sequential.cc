// Tutorial: the same 5 tasks with apply(), which blocks until each result is
// back: they run one after another (even on a Pool of 4), and the total is
// the sum of their lengths.
//   bazel run //examples:pool_apply_sequential
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "mp/os.h"
#include "mp/pool.h"

namespace {

double long_time_task(int name) {
  fmt::print("Run task {} ({})...\n", name, mp::getpid());
  std::fflush(stdout);
  std::mt19937 rng(std::random_device{}() + name);
  const double secs = std::uniform_real_distribution<double>(0.2, 1.0)(rng);
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));
  fmt::print("Task {} runs {:.2f} seconds.\n", name, secs);
  std::fflush(stdout);
  return secs;
}

}  // namespace

int main() {
  fmt::print("Parent process {}.\n", mp::getpid());
  const auto start = std::chrono::steady_clock::now();
  mp::Pool pool(4);
  double sum = 0;
  for (int i = 0; i < 5; ++i) sum += pool.apply(long_time_task, i);
  fmt::print("All done in {:.2f} s (the tasks' lengths add up to {:.2f} s).\n",
             std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), sum);
}
