// Thread cost: start and join of a thread with an empty target.
//   BM_Thread/std_thread/start_join  std::thread create + join — the floor
//   BM_Thread/mp/start_join          mp::Thread(target): construct, start(),
//                                    join() (name, registry, handle state)
// The CPython peer (benchmarks/peers/threading_peer.py) measures
// threading.Thread(target=noop) start+join.
// Goal (issue 7): mp at least 80% of std::thread's rate, same run.
#include <benchmark/benchmark.h>

#include <thread>

#include "mp/threading.h"

namespace {

void noop() {}

void BM_Thread_std_thread(benchmark::State& state) {
  for (auto _ : state) {
    std::thread t(noop);
    t.join();
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Thread_mp(benchmark::State& state) {
  for (auto _ : state) {
    mp::Thread t(noop);
    t.start();
    t.join();
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

// Registered alternately so that drift on a shared machine hits both.
BENCHMARK(BM_Thread_std_thread)->Name("BM_Thread/std_thread/start_join")->UseRealTime();
BENCHMARK(BM_Thread_mp)->Name("BM_Thread/mp/start_join")->UseRealTime();

BENCHMARK_MAIN();
