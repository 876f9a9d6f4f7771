// Manager costs (mp/managers.h), each beside a raw Unix-socket
// request/response peer in this binary and CPython's Manager() doing the
// same work (benchmarks/peers/manager_peer.py, "cpython" prefix).
//
//   BM_ManagerRoundTrip/mp/get        DictProxy<int, int>::get of a present key:
//                                     one request, one reply
//   BM_ManagerRoundTrip/mp/set        DictProxy<int, int>::set
//   BM_ManagerRoundTrip/raw_unix/get  the floor: a forked server that reads a
//                                     length-prefixed request of the same size
//                                     from a Unix stream socket and writes a
//                                     reply of the same size (blocking
//                                     read/write, no epoll, no decoding)
//   BM_ManagerRoundTrip/raw_unix/set  the same with set's sizes
//   BM_ManagerUpdate/mp/<procs>       update(key, fn) by <procs> processes at
//                                     once, 2,000 each per iteration: updates/s
//                                     through the one server (process starts
//                                     included)
//   BM_ManagerListAppend/mp/1         ListProxy<int>::append
// Goals (issue 20), same run: round trip >= 10x CPython's Manager().dict()
// and >= 0.8x the raw Unix-socket round trip.
#include <benchmark/benchmark.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "benchmarks/bench_util.h"
#include "mp/context.h"
#include "mp/managers.h"
#include "mp/os.h"

namespace {

int add_one(int v) { return v + 1; }
MP_MANAGER_FUNCTION(add_one);

void BM_ManagerRoundTrip_mp_get(benchmark::State& state) {
  mp::Manager m;
  auto d = m.dict<int, int>();
  d.set(1, 1);
  for (auto _ : state) benchmark::DoNotOptimize(d.get(1));
  state.SetItemsProcessed(state.iterations());
}

void BM_ManagerRoundTrip_mp_set(benchmark::State& state) {
  mp::Manager m;
  auto d = m.dict<int, int>();
  int i = 0;
  for (auto _ : state) d.set(1, ++i);
  state.SetItemsProcessed(state.iterations());
}

// The raw peer: request and reply sizes as mp's (get: op 1 + id 8 + the
// key as a string 8 + 4 = 21 bytes out, status 1 + optional 1 + 8 + 4 = 14
// back; set: 33 out, 1 back), each with its 8-byte length.
void raw_round_trip(benchmark::State& state, std::size_t request, std::size_t reply) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    state.SkipWithError("socketpair failed");
    return;
  }
  const pid_t pid = mp::fork();
  if (pid == 0) {
    close(sv[0]);
    std::string in(request, '\0'), out(8 + reply, '\0');
    const std::uint64_t n = reply;
    std::memcpy(out.data(), &n, 8);
    for (;;) {
      std::uint64_t len;
      if (!bench::read_full(sv[1], &len, 8) || !bench::read_full(sv[1], in.data(), len)) break;
      if (!bench::write_full(sv[1], out.data(), out.size())) break;
    }
    _exit(0);
  }
  close(sv[1]);
  std::string req(8 + request, 'x'), rep(reply, '\0');
  const std::uint64_t n = request;
  std::memcpy(req.data(), &n, 8);
  for (auto _ : state) {
    if (send(sv[0], req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
      break;
    std::uint64_t len;
    bench::read_full(sv[0], &len, 8);
    bench::read_full(sv[0], rep.data(), len);
  }
  state.SetItemsProcessed(state.iterations());
  close(sv[0]);
  int status;
  waitpid(pid, &status, 0);
}

void BM_ManagerRoundTrip_raw_get(benchmark::State& state) { raw_round_trip(state, 21, 14); }
void BM_ManagerRoundTrip_raw_set(benchmark::State& state) { raw_round_trip(state, 33, 1); }

void BM_ManagerUpdate_mp(benchmark::State& state) {
  const int procs = static_cast<int>(state.range(0));
  constexpr int kEach = 2000;
  mp::Manager m;
  auto d = m.dict<int, int>();
  for (auto _ : state) {
    std::vector<pid_t> pids;
    for (int p = 0; p < procs; ++p) {
      const pid_t pid = mp::fork();
      if (pid == 0) {
        for (int i = 0; i < kEach; ++i) d.update(0, add_one);
        _exit(0);
      }
      pids.push_back(pid);
    }
    for (pid_t pid : pids) {
      int status;
      waitpid(pid, &status, 0);
    }
  }
  state.SetItemsProcessed(state.iterations() * procs * kEach);
}

void BM_ManagerListAppend_mp(benchmark::State& state) {
  mp::Manager m;
  auto l = m.list<int>();
  int i = 0;
  for (auto _ : state) {
    l.append(++i);
    if ((i & 0xffff) == 0) {
      state.PauseTiming();
      l.clear();
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(BM_ManagerRoundTrip_mp_get)->Name("BM_ManagerRoundTrip/mp/get")->UseRealTime();
BENCHMARK(BM_ManagerRoundTrip_raw_get)->Name("BM_ManagerRoundTrip/raw_unix/get")->UseRealTime();
BENCHMARK(BM_ManagerRoundTrip_mp_set)->Name("BM_ManagerRoundTrip/mp/set")->UseRealTime();
BENCHMARK(BM_ManagerRoundTrip_raw_set)->Name("BM_ManagerRoundTrip/raw_unix/set")->UseRealTime();
BENCHMARK(BM_ManagerUpdate_mp)->Name("BM_ManagerUpdate/mp")->Arg(1)->Arg(2)->Arg(4)->UseRealTime();
BENCHMARK(BM_ManagerListAppend_mp)->Name("BM_ManagerListAppend/mp")->Arg(1)->UseRealTime();

int main(int argc, char** argv) {
  mp::freeze_support();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
