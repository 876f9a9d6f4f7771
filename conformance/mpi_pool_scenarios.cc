// The launches of //conformance:mpi_pool_test that need a job of their own
// (mpi_pool_test.cc starts them): mpi_pool_scenarios <scenario>, where
//   one_rank         under mpirun -n 1: Pool() must raise ValueError
//   other_build      rank 0 of mpirun -n 1 this : -n 1 mpi_pool_scenarios_other
//                    (the same source built apart: another build id):
//                    Pool() must raise ProcessError
//   dead_worker      under mpirun -n 3: a task kills its own rank; mpirun
//                    must end the job (nothing after it is printed)
//   singleton_spawn  without mpirun: a Pool of 3 spawned workers
// Rank 0 prints what happened; the test reads it.
#include <fmt/format.h>
#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include "mp/errors.h"
#include "mp/mpi.h"

#ifdef MP_SCENARIOS_OTHER_BUILD
#define MP_SCENARIOS_BUILD "other"
#else
#define MP_SCENARIOS_BUILD "main"
#endif

namespace {

int die(int) {
  ::raise(SIGKILL);
  return 0;
}

int twice(int x) { return 2 * x; }

void say(const std::string& s) {
  fmt::print("{}\n", s);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  mp::mpi::Runtime rt(argc, argv);
  const std::string scenario = argc > 1 ? argv[1] : "";
  say(fmt::format("mpi_pool_scenarios ({} build): {} on {} ranks", MP_SCENARIOS_BUILD, scenario,
                  rt.size()));
  try {
    if (scenario == "one_rank" || scenario == "other_build") {
      mp::mpi::Pool pool;
      say("UNREACHABLE: the pool opened");
    } else if (scenario == "dead_worker") {
      mp::mpi::Pool pool;
      pool.apply(die, 0);
      say("UNREACHABLE: apply returned");
    } else if (scenario == "singleton_spawn") {
      mp::mpi::Pool pool(mp::mpi::PoolOptions{.spawn = 3});
      const std::vector<int> got = pool.map(twice, std::vector<int>{1, 2, 3, 4, 5, 6}, 1);
      if (got == std::vector<int>{2, 4, 6, 8, 10, 12})
        say(fmt::format("OK {} workers", pool.processes()));
      pool.close();
      pool.join();
    } else {
      say("unknown scenario");
      return 2;
    }
  } catch (const mp::ValueError& e) {
    say(fmt::format("ValueError: {}", e.what()));
  } catch (const mp::ProcessError& e) {
    say(fmt::format("ProcessError: {}", e.what()));
  }
  return 0;
}
