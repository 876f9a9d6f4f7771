// mp/mpi.h — mp::Pool's API on MPI ranks: one machine or many, through
// Open MPI. Its own Bazel target, //lib/mp:mpi: programs that do not use it
// do not link MPI.
//
//   double simulate(double p);
//
//   int main(int argc, char** argv) {
//     mp::mpi::Runtime rt(argc, argv);   // MPI_Init; worker ranks serve here
//     mp::mpi::Pool pool;                // one worker per rank but rank 0
//     std::vector<double> r = pool.map(simulate, params);
//   }
//
//   $ mpirun -n 5 ./app                  # rank 0 runs main, four workers
//   $ mpirun -n 33 --hostfile hosts ./app
//
// It mirrors mpi4py.futures.MPIPoolExecutor (static mode under mpirun, and a
// dynamic mode that spawns its workers), with multiprocessing.Pool's API.
//
// Contract:
//   * Runtime: construct one at the top of main(), in every process, before
//     anything else touches MPI. On rank 0 of MPI_COMM_WORLD it returns and
//     the program runs; on every other rank (and in every process a Pool
//     spawned) the constructor serves tasks until rank 0's Runtime ends (or
//     the spawning Pool joins), then finalizes MPI and exits the process
//     with status 0: code after it runs on rank 0 only. Its destructor, on
//     rank 0, stops the worker ranks and finalizes MPI. Destroy every Pool
//     before it. If MPI was initialized already, Runtime neither initializes
//     nor finalizes it.
//   * mp::mpi::Pool is an mp::Pool (it derives from it, adding no state):
//     apply, apply_async with mp::Callbacks, map, map_async, starmap,
//     starmap_async, imap, imap_unordered, close, join, terminate,
//     processes() and RAII are mp::Pool's own, with mp/pool.h's contract,
//     and return the same AsyncResult<T> and IMapIterator<T>; code written
//     against mp::Pool& takes either. Differences are listed below.
//   * Pool() uses every rank of MPI_COMM_WORLD but 0 as workers (static
//     mode; processes() == size - 1). It needs at least two ranks: with one
//     it raises mp::ValueError saying how to launch. Only rank 0 makes Pools.
//     Several Pools may exist at once; they share the worker ranks.
//   * Pool(PoolOptions{.spawn = n}) starts n new processes of this program
//     with MPI_Comm_spawn (dynamic mode, as MPIPoolExecutor(max_workers=n)):
//     it works without mpirun (a singleton) as well as under it. The
//     workers run main() up to their Runtime, with the program's arguments,
//     and exit when the Pool joins. Placement follows MPI_Info keys
//     (PoolOptions::spawn_info: "host", "hostfile", "map_by", ...); by
//     default more workers than cores are allowed ("map_by" ":OVERSUBSCRIBE"),
//     as mp::Pool(n) allows.
//   * Tasks are data, as for mp::Pool under the spawn start method: a
//     function pointer or a stateless callable, arguments and results
//     encoded by mp/codec.h. Every rank runs the same executable: a
//     function's address is translated per rank (internal/modules.h, the
//     start methods' exec-safe reference), and a Pool checks the build id of
//     every worker's executable when it opens. A worker running another
//     build makes the constructor raise mp::ProcessError naming the rank,
//     its host and both build ids. mp/codec.h's wire format is native: all
//     hosts must share the architecture and ABI (the same build ensures it).
//   * Errors come back as for mp::Pool: a task's exception as its own type
//     (std and mp errors, types given to mp::register_exception<E>() on rank
//     0), else mp::RemoteError; a result that does not decode fails its task
//     with mp::CodecError; a callback runs once.
//   * PoolOptions::initializer (a plain function: it travels by address)
//     runs on each worker when the Pool opens; if it throws, the Pool is
//     broken: calls raise mp::BrokenPoolError naming the rank and the error.
//
// Where mpi::Pool differs from mp::Pool, and why:
//   * A worker rank that dies (a crash, SIGKILL, exit() in a task) ends the
//     whole MPI job: Open MPI 4.1 has no fault tolerance, and mpirun aborts
//     every rank, rank 0 included, printing "mpirun noticed that process
//     rank N ... exited on signal 9 (Killed)" and exiting non-zero (measured:
//     within 2 s). There is no WorkerLostError and no replacement; nothing
//     hangs. (mp::Pool fails the task and replaces the worker.)
//   * terminate() cannot kill a rank without ending the job: it fails every
//     pending result with mp::ProcessError at once and drops the tasks not
//     yet started, but a task running on a rank runs to its end (its result
//     is dropped), and join() and the destructor wait for those tasks.
//   * join() after close() waits for the tasks, then releases the ranks for
//     other Pools; in static mode the ranks live on until the Runtime ends.
//   * maxtasksperchild, start_method and the buffer sizes of mp::PoolOptions
//     do not apply (ranks are not replaced; messages of any size travel, in
//     16 MiB pieces, with no size limit for arguments).
//   * Waiting does not spin: Open MPI's blocking calls poll a core at 100%
//     (on an oversubscribed machine, the core a worker needs), and its
//     mpi_yield_when_idle only makes that poll yield. Every wait here, on
//     rank 0 and on the workers, is MPI_Improbe / MPI_Test between sleeps
//     that grow from 16 us to a cap (0.2 ms on rank 0 while tasks run, 1 ms
//     on an idle worker), after a spin of 200 us that follows activity (a
//     request/response round trip fits in it; rank 0 skips it while tasks
//     of 100 us or more run). An idle worker rank costs about 1% of a core;
//     a task reaching a long-idle worker waits up to 1 ms. Runtime also
//     turns off Open MPI's yield in every progress call on oversubscribed
//     nodes (mpi_yield_when_idle, unless the environment sets it): with it,
//     a busy worker gave its core away after each task.
//   * Messages travel on a duplicate of MPI_COMM_WORLD (or the spawn
//     intercommunicator), so a program's own MPI traffic on rank 0 does not
//     mix with the pool's; but worker ranks belong to mp while the Runtime
//     lives (collectives over MPI_COMM_WORLD would wait for them forever).
//   * Tasks reach a worker in batches, and each worker keeps a few queued
//     (about 2 ms of work, by the task times it reports, at least 2 tasks;
//     an idle worker gets at most an equal share of what waits), so short
//     tasks cost little per task and long ones stay balanced. A task queued
//     on a worker waits for that worker even if another becomes free.
//   * MPI is initialized with MPI_THREAD_SERIALIZED; mp serializes its own
//     MPI calls, so a Pool and its results may be used from several threads
//     as mp::Pool's may. A program that calls MPI itself from several
//     threads at once initializes MPI itself (with MPI_THREAD_MULTIPLE)
//     before constructing the Runtime.
//   * In a worker rank the translation of addresses is the one a spawned
//     child uses (internal/modules.h); a task that forks an mp::Process or
//     mp::Pool there must use the spawn or forkserver start method.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mp/pool.h"

namespace mp::mpi {

// Runtime is MPI's lifetime in this process; see the file comment.
class Runtime {
 public:
  // Runtime(argc, argv) initializes MPI (MPI_Init_thread, serialized) with
  // the program's arguments; Runtime() without them. On a worker rank it
  // does not return (it serves tasks, then exits the process).
  Runtime(int& argc, char**& argv);
  Runtime();
  // ~Runtime() on rank 0: tells the worker ranks to exit, finalizes MPI.
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // rank() and size() are this process's in MPI_COMM_WORLD.
  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }

 private:
  void start(int* argc, char*** argv);
  int rank_ = 0;
  int size_ = 1;
  bool finalize_ = false;
};

// PoolOptions are mpi::Pool's keyword arguments.
struct PoolOptions {
  // spawn: start this many worker processes with MPI_Comm_spawn (>= 1);
  // unset: use the other ranks of MPI_COMM_WORLD.
  std::optional<int> spawn;
  // spawn_info: MPI_Info keys for MPI_Comm_spawn ("host", "hostfile",
  // "map_by", "wdir", ...). When "map_by" is not given, ":OVERSUBSCRIBE".
  std::vector<std::pair<std::string, std::string>> spawn_info;
  // initializer: run on each worker when the pool opens (a plain function:
  // it travels by address).
  void (*initializer)() = nullptr;
};

// Pool is mp::Pool with MPI ranks for workers; see the file comment.
class Pool : public mp::Pool {
 public:
  // Pool() uses the other ranks of MPI_COMM_WORLD; Pool(options) may spawn.
  Pool();
  explicit Pool(PoolOptions options);
  Pool(Pool&&) noexcept = default;
};

}  // namespace mp::mpi
