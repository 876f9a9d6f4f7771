// Tutorial: a Pool of 4 processes runs 5 tasks of random length.
// Four tasks start at once; the fifth waits until a worker is free and then
// runs in a process that already ran a task (look at the pids).
//   bazel run //examples:pool_reuse
// With five workers all five tasks start at once, each in its own process,
// and the total is about the longest task:
//   bazel run //examples:pool_reuse -- 5
// See also pool_apply_sequential (apply: one after another).
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

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
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("Task {} runs {:.2f} seconds.\n", name, took);
  std::fflush(stdout);
  return took;
}

}  // namespace

int main(int argc, char** argv) {
  const int workers = argc > 1 ? std::atoi(argv[1]) : 4;
  fmt::print("Parent process {}, Pool({}).\n", mp::getpid(), workers);
  const auto start = std::chrono::steady_clock::now();
  mp::Pool pool(workers);
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
