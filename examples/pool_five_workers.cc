// Tutorial: a Pool of 5 processes runs 5 tasks of random length: all five
// start at once, each in its own process, and the total is about the
// longest task.
//   bazel run //examples:pool_five_workers
// See also pool_reuse (Pool(4): the fifth task waits) and
// pool_apply_sequential (apply: one after another).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "mp/os.h"
#include "mp/pool.h"

namespace {

// long_time_task is a plain function: tasks cross to the workers as data.
double long_time_task(int name) {
  fmt::print("Run task {} ({})...\n", name, mp::getpid());
  std::fflush(stdout);
  std::mt19937 rng(std::random_device{}() + name);
  const double secs = std::uniform_real_distribution<double>(0.2, 2.0)(rng);
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("Task {} runs {:.2f} seconds.\n", name, took);
  std::fflush(stdout);
  return took;
}

}  // namespace

int main() {
  fmt::print("Parent process {}.\n", mp::getpid());
  const auto start = std::chrono::steady_clock::now();
  mp::Pool pool(5);
  std::vector<mp::AsyncResult<double>> results;
  for (int i = 0; i < 5; ++i) results.push_back(pool.apply_async(long_time_task, i));
  fmt::print("Waiting for all subprocesses done...\n");
  std::fflush(stdout);
  pool.close();
  pool.join();
  for (auto& r : results) r.get();
  fmt::print("All subprocesses done in {:.2f} s.\n",
             std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}
