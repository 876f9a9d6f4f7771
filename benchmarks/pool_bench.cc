// Pool throughput: noop(int) tasks on Pool(2), the five workloads of issue 5,
// and a 1 ms-work task on Pool(1) and Pool(2) to show scaling.
//   BM_Pool/mp/apply_async     20k apply_async submitted, then all gathered
//   BM_Pool/mp/apply           one blocking round trip per iteration
//   BM_Pool/mp/map_chunk1      map over 20k ints, chunksize 1
//   BM_Pool/mp/map_default     map over 200k ints, default chunksize
//   BM_Pool/mp/imap_unordered  imap_unordered over 20k ints, chunksize 1
//   BM_Pool/mp/work1ms/N       40 tasks of 1 ms busy work on Pool(N)
//   BM_Pool/mp/cpu_work/T/W    the scaling grid: tasks of T us of CPU work
//                              (T = 1, 50, 1000) on Pool(W), W = 1, 2, 4, ...
//                              up to the usable CPUs; map with chunksize 1
// items_per_second counts tasks. Reports read the grid as efficiency:
// rate(W) / (W x rate(1)). The four noop workloads run one untimed
// round first (see rounds() below). The CPython peer
// (benchmarks/peers/pool_peer.py) measures the same workloads on
// multiprocessing.Pool(2) with the fork start method, as BM_Pool/cpython/...
// Targets (issue 5): apply_async and map_chunk1 >= 50x CPython's rate,
// apply >= 10x, map_default >= 3x.
#include <benchmark/benchmark.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <vector>

#include "benchmarks/bench_util.h"
#include "mp/pool.h"

namespace {

using bench::busy_1ms;
using bench::iota;
using bench::noop;

// rounds: each run forks its pool anew, and the first round after the fork
// pays for first touches: for 20k apply_async, ~1100 page faults in this
// process (~4 MB of results and buffers, each page written for the first
// time since the fork), at ~25 us each on the project's VM: 30-60 ms against
// 2-6 ms for a later round. With --quick (0.05 s) a run is one to eight
// rounds, so that one round set the figure: apply_async flipped between 0.3M
// and 1.6M items/s from run to run, imap_unordered read 0.38M against 2.8M.
// One untimed round first measures the pool as it runs, at any run length.
// CPython's peer needs none: the same first touches are ~1% of its rounds.
template <class Round>
void rounds(benchmark::State& state, Round round) {
  round();
  for (auto _ : state) round();
}

void BM_apply_async(benchmark::State& state) {
  mp::Pool pool(2);
  constexpr int kTasks = 20000;
  std::vector<mp::AsyncResult<int>> results;
  results.reserve(kTasks);
  rounds(state, [&] {
    results.clear();
    for (int i = 0; i < kTasks; ++i) results.push_back(pool.apply_async(noop, i));
    long sum = 0;
    for (auto& r : results) sum += r.get();
    benchmark::DoNotOptimize(sum);
  });
  state.SetItemsProcessed(state.iterations() * kTasks);
}

void BM_apply(benchmark::State& state) {
  mp::Pool pool(2);
  int i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(pool.apply(noop, i++));
  state.SetItemsProcessed(state.iterations());
}

void BM_map_chunk1(benchmark::State& state) {
  mp::Pool pool(2);
  const auto items = iota(20000);
  rounds(state, [&] { benchmark::DoNotOptimize(pool.map(noop, items, 1)); });
  state.SetItemsProcessed(state.iterations() * items.size());
}

void BM_map_default(benchmark::State& state) {
  mp::Pool pool(2);
  const auto items = iota(200000);
  rounds(state, [&] { benchmark::DoNotOptimize(pool.map(noop, items)); });
  state.SetItemsProcessed(state.iterations() * items.size());
}

void BM_imap_unordered(benchmark::State& state) {
  mp::Pool pool(2);
  const auto items = iota(20000);
  rounds(state, [&] {
    long sum = 0;
    for (int v : pool.imap_unordered(noop, items)) sum += v;
    benchmark::DoNotOptimize(sum);
  });
  state.SetItemsProcessed(state.iterations() * items.size());
}

void BM_work1ms(benchmark::State& state) {
  mp::Pool pool(static_cast<int>(state.range(0)));
  const auto items = iota(40);
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(busy_1ms, items, 1));
  state.SetItemsProcessed(state.iterations() * items.size());
}

// ------------------------------------------------------- the scaling grid

// spin(n) runs n rounds of a dependent integer recurrence: CPU work that
// neither touches memory nor calls the clock, so W workers on W free CPUs
// each finish it in the same time as one.
std::uint64_t spin(std::uint64_t n) {
  std::uint64_t x = 88172645463325252ull;
  for (std::uint64_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    benchmark::DoNotOptimize(x);
  }
  return x;
}

// spins_per_us: how many rounds of spin() take 1 us on one core, the best
// of fifteen samples of about 1 ms, short enough that on a busy machine some
// run without being preempted (calibrated once per process, before any pool
// forks, so every worker inherits it). The CPython peer calibrates its own
// task the same way (benchmarks/peers/pool_peer.py: cpu_work), so on both
// sides a "50 us" task takes 50 us on one core.
double spins_per_us() {
  static const double rate = [] {
    double best = 0;
    for (int i = 0; i < 15; ++i) {
      constexpr std::uint64_t kRounds = 1 << 20;
      const auto t0 = std::chrono::steady_clock::now();
      spin(kRounds);
      const std::chrono::duration<double, std::micro> us = std::chrono::steady_clock::now() - t0;
      best = std::max(best, kRounds / us.count());
    }
    return best;
  }();
  return rate;
}

std::uint64_t g_spins = 0;  // set before the pool forks; workers read their copy

std::uint64_t cpu_task(int) { return spin(g_spins); }

// grid_tasks: tasks per round, the same on both sides (pool_peer.py):
// about 20 ms of work, at least 32 per worker, at most 2000.
int grid_tasks(int task_us, int workers) { return std::clamp(20000 / task_us, 32 * workers, 2000); }

void BM_cpu_work(benchmark::State& state) {
  const int task_us = static_cast<int>(state.range(0));
  const int workers = static_cast<int>(state.range(1));
  g_spins = static_cast<std::uint64_t>(task_us * spins_per_us());
  mp::Pool pool(workers);
  const auto items = iota(grid_tasks(task_us, workers));
  rounds(state, [&] { benchmark::DoNotOptimize(pool.map(cpu_task, items, 1)); });
  state.SetItemsProcessed(state.iterations() * items.size());
}

// usable_cpus: the CPUs this process may run on (what cpu_count() reports
// in the peer: os.sched_getaffinity).
int usable_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

void grid(benchmark::internal::Benchmark* b) {
  const int cpus = usable_cpus();
  for (int task_us : {1, 50, 1000}) {
    for (int w = 1; w < cpus; w *= 2) b->Args({task_us, w});
    b->Args({task_us, cpus});
  }
}

}  // namespace

BENCHMARK(BM_apply_async)
    ->Name("BM_Pool/mp/apply_async")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_apply)->Name("BM_Pool/mp/apply")->UseRealTime();
BENCHMARK(BM_map_chunk1)
    ->Name("BM_Pool/mp/map_chunk1")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_map_default)
    ->Name("BM_Pool/mp/map_default")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_imap_unordered)
    ->Name("BM_Pool/mp/imap_unordered")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_work1ms)
    ->Name("BM_Pool/mp/work1ms")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_cpu_work)
    ->Name("BM_Pool/mp/cpu_work")
    ->Apply(grid)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
