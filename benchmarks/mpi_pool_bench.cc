// mp::mpi::Pool throughput (issue 19), run as an MPI job: rank 0 measures,
// the other ranks are the workers. benchmarks:all starts it as
//   mpirun -n 3 --oversubscribe mpi_pool
// (two workers), and mpi4py's MPIPoolExecutor with the same ranks
// (peers/mpi_pool_peer.py). noop(int) tasks:
//   BM_MpiPool/<impl>/apply_async  10k apply_async submitted, then all gathered
//   BM_MpiPool/<impl>/apply        one blocking round trip per iteration
//   BM_MpiPool/<impl>/map_chunk1   map over 10k ints, chunksize 1
//   BM_MpiPool/<impl>/map_default  map over 100k ints, the default chunksize
//   BM_MpiPool/<impl>/work1ms      map over 200 tasks of 1 ms busy work, chunksize 1
// impl: mp (mp::mpi::Pool on the ranks), mp_pool (mp::Pool with as many
// workers, forked on rank 0's machine), mpi4py (the peer script), and
// ideal/work1ms: the rate of perfect scaling, workers / 1 ms (manual time,
// no work done). items_per_second counts tasks.
// Goals (issue 19): mp at least 10x mpi4py on apply_async and map_chunk1;
// work1ms at least 0.9x ideal.
#include <benchmark/benchmark.h>

#include <chrono>
#include <numeric>
#include <vector>

#include "benchmarks/bench_util.h"
#include "mp/mpi.h"
#include "mp/pool.h"

namespace {

constexpr int kTasks = 10000;
constexpr int kMapDefault = 100000;
constexpr int kWorkTasks = 200;

using bench::busy_1ms;
using bench::iota;
using bench::noop;

int workers() {
  static const int n = [] {
    mp::mpi::Pool pool;
    return pool.processes();
  }();
  return n;
}

// pool_for<P>: the pool a benchmark of impl P runs on, made once per run.
template <class P>
P make_pool() {
  if constexpr (std::is_same_v<P, mp::Pool>) {
    return mp::Pool(workers());
  } else {
    return mp::mpi::Pool();
  }
}

// One untimed round first (as pool_bench.cc: first touches after the start).
template <class Round>
void rounds(benchmark::State& state, Round round) {
  round();
  for (auto _ : state) round();
}

template <class P>
void BM_apply_async(benchmark::State& state) {
  P pool = make_pool<P>();
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

template <class P>
void BM_apply(benchmark::State& state) {
  P pool = make_pool<P>();
  int i = 0;
  pool.apply(noop, i);
  for (auto _ : state) benchmark::DoNotOptimize(pool.apply(noop, i++));
  state.SetItemsProcessed(state.iterations());
}

template <class P>
void BM_map_chunk1(benchmark::State& state) {
  P pool = make_pool<P>();
  const auto items = iota(kTasks);
  rounds(state, [&] { benchmark::DoNotOptimize(pool.map(noop, items, 1)); });
  state.SetItemsProcessed(state.iterations() * kTasks);
}

template <class P>
void BM_map_default(benchmark::State& state) {
  P pool = make_pool<P>();
  const auto items = iota(kMapDefault);
  rounds(state, [&] { benchmark::DoNotOptimize(pool.map(noop, items)); });
  state.SetItemsProcessed(state.iterations() * kMapDefault);
}

template <class P>
void BM_work1ms(benchmark::State& state) {
  P pool = make_pool<P>();
  const auto items = iota(kWorkTasks);
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(busy_1ms, items, 1));
  state.SetItemsProcessed(state.iterations() * kWorkTasks);
}

// The ideal: every worker busy with 1 ms tasks all the time.
void BM_ideal_work1ms(benchmark::State& state) {
  const double seconds = kWorkTasks * 1e-3 / workers();
  for (auto _ : state) state.SetIterationTime(seconds);
  state.SetItemsProcessed(state.iterations() * kWorkTasks);
}

}  // namespace

#define MP_MPI_BENCH(fn, name)                                                       \
  BENCHMARK_TEMPLATE(fn, mp::mpi::Pool)->Name("BM_MpiPool/mp/" name)->UseRealTime(); \
  BENCHMARK_TEMPLATE(fn, mp::Pool)->Name("BM_MpiPool/mp_pool/" name)->UseRealTime();

MP_MPI_BENCH(BM_apply_async, "apply_async")
MP_MPI_BENCH(BM_apply, "apply")
MP_MPI_BENCH(BM_map_chunk1, "map_chunk1")
MP_MPI_BENCH(BM_map_default, "map_default")
MP_MPI_BENCH(BM_work1ms, "work1ms")
BENCHMARK(BM_ideal_work1ms)->Name("BM_MpiPool/ideal/work1ms")->UseManualTime();

int main(int argc, char** argv) {
  mp::mpi::Runtime rt(argc, argv);  // the worker ranks serve in here
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
