// Spawn cost: start and join of a trivial child.
//   BM_Spawn/raw_fork    fork(), _exit(0) in the child, waitpid() — the floor
//   BM_Spawn/mp_process  mp::Process with an empty target: start() + join()
//   BM_Spawn/std_thread  std::thread create + join, for scale
// The CPython peer (benchmarks/peers/spawn_peer.py) measures
// multiprocessing.Process(noop) start+join with the fork start method.
// Goal (issue 2): mp_process at least 90% of raw_fork's rate, same run.
#include <benchmark/benchmark.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "mp/process.h"

namespace {

void BM_Spawn_raw_fork(benchmark::State& state) {
  for (auto _ : state) {
    pid_t pid = ::fork();
    if (pid == 0) _exit(0);
    if (pid < 0) {
      state.SkipWithError("fork failed");
      break;
    }
    int status;
    waitpid(pid, &status, 0);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Spawn_mp_process(benchmark::State& state) {
  for (auto _ : state) {
    mp::Process p([] {});
    p.start();
    p.join();
    benchmark::DoNotOptimize(p.exitcode());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Spawn_std_thread(benchmark::State& state) {
  for (auto _ : state) {
    std::thread t([] {});
    t.join();
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

// Interleave repetitions of peers so drift on a shared machine hits both.
BENCHMARK(BM_Spawn_raw_fork)->Name("BM_Spawn/raw_fork")->UseRealTime();
BENCHMARK(BM_Spawn_mp_process)->Name("BM_Spawn/mp_process")->UseRealTime();
BENCHMARK(BM_Spawn_std_thread)->Name("BM_Spawn/std_thread")->UseRealTime();

BENCHMARK_MAIN();
