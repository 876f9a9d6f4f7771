// Tutorial: mp::Pool's API on MPI ranks (mp/mpi.h). Rank 0 runs main(); the
// other ranks serve its tasks. Build it, then launch it with mpirun:
//
//   bazel build //examples:mpi_pool
//   mpirun -n 3 --oversubscribe bazel-bin/examples/mpi_pool       # 2 workers, this machine
//   mpirun -n 9 --hostfile hosts bazel-bin/examples/mpi_pool      # 8 workers, several machines
//
// (as root, mpirun also wants --allow-run-as-root). Without mpirun, or with
// --spawn N, the pool starts N workers itself (MPI_Comm_spawn):
//
//   bazel-bin/examples/mpi_pool --spawn 2
//
// A hostfile names one machine per line and how many ranks it takes
// ("node1 slots=4"); every machine needs the same executable at the same
// path (a shared file system, or a copy), and ssh from the first to the rest.
#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "mp/mpi.h"

namespace {

// hits(seed): how many of a million random points fall in the unit circle.
// A plain function: tasks travel to the ranks as data.
std::int64_t hits(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::int64_t n = 0;
  for (int i = 0; i < 1'000'000; ++i) {
    const double x = u(rng), y = u(rng);
    n += x * x + y * y <= 1.0;
  }
  return n;
}

// where(): which process ran the task.
std::string where(int task) {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return fmt::format("task {} ran in pid {} on {}", task, ::getpid(), host);
}

double checked_sqrt(double x) {
  if (x < 0) throw std::domain_error(fmt::format("sqrt of {}", x));
  return std::sqrt(x);
}

}  // namespace

int main(int argc, char** argv) {
  mp::mpi::Runtime rt(argc, argv);  // worker ranks serve in here, then exit
  mp::mpi::PoolOptions options;
  if (argc == 3 && std::strcmp(argv[1], "--spawn") == 0) {
    options.spawn = std::atoi(argv[2]);
  } else if (rt.size() == 1) {
    options.spawn = 2;  // started without mpirun: spawn two workers
  }
  mp::mpi::Pool pool(options);
  fmt::print("rank {} of {}: a pool of {} workers\n", rt.rank(), rt.size(), pool.processes());

  // map: in order, as mp::Pool's.
  std::vector<std::uint64_t> seeds;
  for (std::uint64_t s = 1; s <= 16; ++s) seeds.push_back(s);
  std::int64_t total = 0;
  for (std::int64_t h : pool.map(hits, seeds)) total += h;
  fmt::print("pi is about {:.5f} (16 million points)\n", 4.0 * total / (16.0 * 1'000'000));

  // imap_unordered: as they complete.
  for (const std::string& s : pool.imap_unordered(where, std::vector{1, 2, 3, 4})) {
    fmt::print("  {}\n", s);
  }

  // apply_async with a callback; a task's exception comes back as its type.
  auto r = pool.apply_async(
      mp::Callbacks{
          .callback = [](const double& v) { fmt::print("callback: sqrt(2) = {:.4f}\n", v); }},
      checked_sqrt, 2.0);
  r.wait();
  try {
    pool.apply(checked_sqrt, -1.0);
  } catch (const std::domain_error& e) {
    fmt::print("the task raised std::domain_error: {}\n", e.what());
  }
  pool.close();
  pool.join();
}
