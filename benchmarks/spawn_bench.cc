// Spawn cost: start and join of a trivial child, under each start method.
//   BM_Spawn/raw_fork            fork(), _exit(0) in the child, waitpid() — the floor
//   BM_Spawn/raw_posix_spawn     posix_spawn of this binary, which exits at once, waitpid():
//                                the floor of an exec'd child (mp_spawn's peer)
//   BM_Spawn/mp_process          mp::Process (fork start method): start() + join()
//   BM_Spawn/mp_forkserver       the same with the forkserver start method (server running)
//   BM_Spawn/mp_spawn            the same with the spawn start method
//   BM_Spawn/std_thread          std::thread create + join, for scale
//   .../big_parent               raw_fork, mp_process, mp_forkserver, mp_spawn again from a
//                                parent holding 1 GiB of touched heap (what a large program
//                                pays per child)
// The CPython peer (benchmarks/peers/spawn_peer.py) measures
// multiprocessing.Process(noop) start+join with each of its start methods
// (BM_Spawn/cpython_process, cpython_forkserver, cpython_spawn).
// Goals (benchmarks/goals.json): mp_process at least 0.9x raw_fork (issue 2);
// mp_forkserver at least 0.5x raw_fork, mp_forkserver/big_parent at least 10x
// raw_fork/big_parent, mp_spawn at least 20x cpython_spawn (issue 14).
#include <benchmark/benchmark.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "mp/context.h"
#include "mp/process.h"

extern char** environ;

namespace {

constexpr std::size_t kBigParentBytes = std::size_t{1} << 30;

// BigHeap holds 1 GiB of touched heap for the duration of one benchmark.
class BigHeap {
 public:
  BigHeap() : bytes_(new char[kBigParentBytes]) {
    for (std::size_t i = 0; i < kBigParentBytes; i += 4096) bytes_[i] = static_cast<char>(i);
  }

 private:
  std::unique_ptr<char[]> bytes_;
};

void noop() {}

void raw_fork_loop(benchmark::State& state) {
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

void raw_posix_spawn_loop(benchmark::State& state) {
  char self[] = "/proc/self/exe";
  char flag[] = "--spawn-bench-exit";
  char* argv[] = {self, flag, nullptr};
  for (auto _ : state) {
    pid_t pid;
    if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, environ) != 0) {
      state.SkipWithError("posix_spawn failed");
      break;
    }
    int status;
    waitpid(pid, &status, 0);
  }
  state.SetItemsProcessed(state.iterations());
}

void mp_loop(benchmark::State& state, const char* method) {
  auto ctx = mp::get_context(method);
  if (std::strcmp(method, "forkserver") == 0) mp::forkserver::ensure_running();
  for (auto _ : state) {
    mp::Process p = ctx.Process(noop);
    p.start();
    p.join();
    benchmark::DoNotOptimize(p.exitcode());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Spawn_raw_fork(benchmark::State& state) { raw_fork_loop(state); }
void BM_Spawn_raw_posix_spawn(benchmark::State& state) { raw_posix_spawn_loop(state); }

void BM_Spawn_mp_process(benchmark::State& state) {
  for (auto _ : state) {
    mp::Process p([] {});
    p.start();
    p.join();
    benchmark::DoNotOptimize(p.exitcode());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Spawn_mp_forkserver(benchmark::State& state) { mp_loop(state, "forkserver"); }
void BM_Spawn_mp_spawn(benchmark::State& state) { mp_loop(state, "spawn"); }

void BM_Spawn_std_thread(benchmark::State& state) {
  for (auto _ : state) {
    std::thread t([] {});
    t.join();
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Spawn_raw_fork_big(benchmark::State& state) {
  BigHeap heap;
  raw_fork_loop(state);
}
void BM_Spawn_mp_process_big(benchmark::State& state) {
  BigHeap heap;
  mp_loop(state, "fork");
}
void BM_Spawn_mp_forkserver_big(benchmark::State& state) {
  BigHeap heap;
  mp_loop(state, "forkserver");
}
void BM_Spawn_mp_spawn_big(benchmark::State& state) {
  BigHeap heap;
  mp_loop(state, "spawn");
}

}  // namespace

// Interleave repetitions of peers so drift on a shared machine hits both.
BENCHMARK(BM_Spawn_raw_fork)->Name("BM_Spawn/raw_fork")->UseRealTime();
BENCHMARK(BM_Spawn_mp_process)->Name("BM_Spawn/mp_process")->UseRealTime();
BENCHMARK(BM_Spawn_mp_forkserver)->Name("BM_Spawn/mp_forkserver")->UseRealTime();
BENCHMARK(BM_Spawn_raw_posix_spawn)->Name("BM_Spawn/raw_posix_spawn")->UseRealTime();
BENCHMARK(BM_Spawn_mp_spawn)->Name("BM_Spawn/mp_spawn")->UseRealTime();
BENCHMARK(BM_Spawn_std_thread)->Name("BM_Spawn/std_thread")->UseRealTime();
BENCHMARK(BM_Spawn_raw_fork_big)->Name("BM_Spawn/raw_fork/big_parent")->UseRealTime();
BENCHMARK(BM_Spawn_mp_process_big)->Name("BM_Spawn/mp_process/big_parent")->UseRealTime();
BENCHMARK(BM_Spawn_mp_forkserver_big)->Name("BM_Spawn/mp_forkserver/big_parent")->UseRealTime();
BENCHMARK(BM_Spawn_mp_spawn_big)->Name("BM_Spawn/mp_spawn/big_parent")->UseRealTime();

int main(int argc, char** argv) {
  // raw_posix_spawn's child: exit at once, before anything else runs.
  if (argc > 1 && std::strcmp(argv[1], "--spawn-bench-exit") == 0) return 0;
  // mp_spawn's children and the forkserver run their task here.
  mp::freeze_support();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
