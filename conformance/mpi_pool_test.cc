// mp::mpi::Pool: multiprocessing.Pool's API (Python docs, "Process Pools",
// multiprocessing.pool.Pool, AsyncResult) on MPI ranks, as
// mpi4py.futures.MPIPoolExecutor runs on them; mp/mpi.h's contract.
//
// //conformance:mpi_pool_test runs this binary under
//   mpirun -n 3 --oversubscribe --mca btl tcp,self
// (conformance/mpi_pool_test.sh): rank 0 runs the tests, ranks 1 and 2 are
// the workers, and every message takes the TCP path a run across machines
// takes. The cases that need another launch (one rank, a rank running
// another build, a rank that dies, no mpirun at all) run
// conformance/mpi_pool_scenarios in a job of their own, started here.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "mp/codec.h"
#include "mp/errors.h"
#include "mp/mpi.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---- tasks (plain functions: they travel by address to the other ranks) ----

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }
int pid_of(int) { return static_cast<int>(::getpid()); }

int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

// pid_after_ms(ms): sleeps, then says which process ran it.
int pid_after_ms(int ms) {
  sleep_ms(ms);
  return static_cast<int>(::getpid());
}

std::int64_t process_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// cpu_sample(ms): after `ms` of sleep, this worker's pid and CPU time so far.
std::pair<int, std::int64_t> cpu_sample(int ms) {
  sleep_ms(ms);
  return {static_cast<int>(::getpid()), process_cpu_ns()};
}

int fail_invalid(int x) {
  if (x == 3) throw std::invalid_argument(fmt::format("bad item {}", x));
  return x;
}

int fail_value_error(int) { throw mp::ValueError("mp error from a rank"); }

struct Unregistered : std::runtime_error {
  using std::runtime_error::runtime_error;
};
int fail_unregistered(int) { throw Unregistered("not known on rank 0"); }

struct Registered : std::runtime_error {
  explicit Registered(const std::string& m) : std::runtime_error(m) {}
};
int fail_registered(int) { throw Registered("known on rank 0"); }

std::string big_string(std::uint64_t n) {
  std::string s(n, '\0');
  for (std::uint64_t i = 0; i < n; i += 4096) s[i] = static_cast<char>('a' + (i / 4096) % 26);
  s[n - 1] = 'Z';
  return s;
}

std::uint64_t checksum(const std::string& s) {
  std::uint64_t sum = s.size();
  for (std::uint64_t i = 0; i < s.size(); i += 4096) sum += static_cast<unsigned char>(s[i]);
  return sum + static_cast<unsigned char>(s.back());
}

// Fragile encodes on a worker and never decodes on rank 0.
struct Fragile {
  int v;
};

Fragile make_fragile(int v) { return Fragile{v}; }

int g_initialized = 0;
void init_worker() { g_initialized = 42; }
int read_initialized(int) { return g_initialized; }
void init_that_throws() { throw std::runtime_error("no database on this rank"); }

}  // namespace

template <>
struct mp::codec_traits<Fragile> {
  static void encode(mp::Encoder& e, const Fragile& f) { e.write(f.v); }
  static Fragile decode(mp::Decoder&) { throw mp::CodecError("Fragile cannot be decoded"); }
};

namespace {

std::vector<int> iota(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

std::vector<int> squares(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(i * i);
  return v;
}

// ---- Pool's API on ranks --------------------------------------------------

TEST(MpiPool, ProcessesIsEveryRankButRankZero) {
  mp::mpi::Pool pool;
  EXPECT_EQ(pool.processes(), 2);
}

TEST(MpiPool, IsAnMpPool) {
  mp::mpi::Pool pool;
  mp::Pool& base = pool;
  EXPECT_EQ(base.apply(square, 7), 49);
}

TEST(MpiPool, ApplyRunsTheTaskOnAnotherRank) {
  mp::mpi::Pool pool;
  EXPECT_NE(pool.apply(pid_of, 0), static_cast<int>(::getpid()));
}

TEST(MpiPool, ApplyAsyncReturnsAtOnceAndGetReturnsTheResult) {
  mp::mpi::Pool pool;
  const auto start = Clock::now();
  mp::AsyncResult<int> r = pool.apply_async(sleep_ms, 300);
  EXPECT_LT(Clock::now() - start, 250ms);
  EXPECT_EQ(r.get(), 300);
  EXPECT_TRUE(r.ready());
  EXPECT_TRUE(r.successful());
}

TEST(MpiPool, GetWithTimeoutRaisesTimeoutErrorAndALaterGetReturns) {
  mp::mpi::Pool pool;
  auto r = pool.apply_async(sleep_ms, 400);
  const auto start = Clock::now();
  EXPECT_THROW(r.get(100ms), mp::TimeoutError);
  const auto took = Clock::now() - start;
  EXPECT_GE(took, 100ms - 50ms);
  EXPECT_LT(took, 100ms + 1s);
  EXPECT_EQ(r.get(), 400);
}

TEST(MpiPool, MapReturnsResultsInInputOrder) {
  mp::mpi::Pool pool;
  EXPECT_EQ(pool.map(square, iota(1000)), squares(1000));
  EXPECT_EQ(pool.map(square, iota(1000), 1), squares(1000));
  EXPECT_EQ(pool.map(square, iota(1000), 7), squares(1000));
}

TEST(MpiPool, MapSpreadsTasksOverEveryWorker) {
  mp::mpi::Pool pool;
  const std::vector<int> pids = pool.map(pid_after_ms, std::vector<int>(2, 100), 1);
  EXPECT_EQ(std::set<int>(pids.begin(), pids.end()).size(), 2u);
}

TEST(MpiPool, MapAsyncGivesTheListToItsCallback) {
  mp::mpi::Pool pool;
  std::atomic<int> calls{0};
  std::vector<int> seen;
  auto r = pool.map_async(mp::Callbacks{.callback =
                                            [&](const std::vector<int>& v) {
                                              ++calls;
                                              seen = v;
                                            }},
                          square, iota(50));
  EXPECT_EQ(r.get(), squares(50));
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(seen, squares(50));
}

TEST(MpiPool, StarmapAppliesEachTuple) {
  mp::mpi::Pool pool;
  std::vector<std::tuple<int, int>> args{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(pool.starmap(add, args), (std::vector<int>{3, 7, 11}));
}

TEST(MpiPool, EmptyInputGivesAnEmptyResult) {
  mp::mpi::Pool pool;
  EXPECT_TRUE(pool.map(square, std::vector<int>{}).empty());
  int n = 0;
  for (int v : pool.imap_unordered(square, std::vector<int>{})) n += v + 1;
  EXPECT_EQ(n, 0);
}

TEST(MpiPool, ChunksizeBelowOneRaisesValueError) {
  mp::mpi::Pool pool;
  EXPECT_THROW(pool.map(square, iota(3), 0), mp::ValueError);
  EXPECT_THROW(pool.imap(square, iota(3), 0), mp::ValueError);
}

TEST(MpiPool, ImapYieldsInInputOrderWhateverTheCompletionOrder) {
  mp::mpi::Pool pool;
  // Earlier items take longer: they complete last.
  std::vector<int> ms{120, 90, 60, 30, 0};
  std::vector<int> got;
  for (int v : pool.imap(sleep_ms, ms)) got.push_back(v);
  EXPECT_EQ(got, ms);
}

TEST(MpiPool, ImapUnorderedYieldsEachResultExactlyOnce) {
  mp::mpi::Pool pool;
  std::multiset<int> got;
  for (int v : pool.imap_unordered(square, iota(2000))) got.insert(v);
  const std::vector<int> want = squares(2000);
  EXPECT_EQ(got, std::multiset<int>(want.begin(), want.end()));
}

TEST(MpiPool, ImapWithChunksizeKeepsOrder) {
  mp::mpi::Pool pool;
  std::vector<int> got;
  for (int v : pool.imap(square, iota(101), 10)) got.push_back(v);
  EXPECT_EQ(got, squares(101));
}

TEST(MpiPool, ImapPullsAnUnboundedInputLazily) {
  mp::mpi::Pool pool;
  auto it = pool.imap(square, std::views::iota(0), 1, 8);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(it.next(), std::optional<int>(i * i));
}

TEST(MpiPool, TaskExceptionsComeBackAsTheirType) {
  mp::mpi::Pool pool;
  try {
    pool.apply(fail_invalid, 3);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "bad item 3");
  }
  EXPECT_THROW(pool.apply(fail_value_error, 0), mp::ValueError);
  try {
    pool.apply(fail_unregistered, 0);
    ADD_FAILURE() << "no exception";
  } catch (const mp::RemoteError& e) {
    EXPECT_NE(e.type_name().find("Unregistered"), std::string::npos) << e.type_name();
    EXPECT_EQ(e.message(), "not known on rank 0");
  }
  mp::register_exception<Registered>();
  EXPECT_THROW(pool.apply(fail_registered, 0), Registered);
}

TEST(MpiPool, MapRaisesAChunksErrorAndThePoolGoesOn) {
  mp::mpi::Pool pool;
  EXPECT_THROW(pool.map(fail_invalid, iota(10), 1), std::invalid_argument);
  EXPECT_EQ(pool.apply(square, 5), 25);
}

TEST(MpiPool, ImapRaisesAFailedItemAtItsPlaceAndGoesOn) {
  mp::mpi::Pool pool;
  auto it = pool.imap(fail_invalid, iota(6));
  std::vector<int> got;
  int errors = 0;
  for (;;) {
    try {
      auto v = it.next();
      if (!v) break;
      got.push_back(*v);
    } catch (const std::invalid_argument&) {
      ++errors;
      got.push_back(-1);
    }
  }
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, -1, 4, 5}));
  EXPECT_EQ(errors, 1);
}

TEST(MpiPool, CallbackRunsExactlyOnceBeforeGetReturns) {
  mp::mpi::Pool pool;
  std::atomic<int> calls{0};
  int value = 0;
  auto r = pool.apply_async(mp::Callbacks{.callback =
                                              [&](const int& v) {
                                                ++calls;
                                                value = v;
                                              }},
                            square, 9);
  EXPECT_EQ(r.get(), 81);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(value, 81);
  r.get();
  EXPECT_EQ(calls.load(), 1);
}

TEST(MpiPool, ErrorCallbackRunsExactlyOnceWithTheError) {
  mp::mpi::Pool pool;
  std::atomic<int> oks{0}, errors{0};
  auto r = pool.apply_async(mp::Callbacks{.callback = [&](const int&) { ++oks; },
                                          .error_callback =
                                              [&](std::exception_ptr e) {
                                                ++errors;
                                                EXPECT_THROW(std::rethrow_exception(e),
                                                             std::invalid_argument);
                                              }},
                            fail_invalid, 3);
  r.wait();
  EXPECT_FALSE(r.successful());
  EXPECT_EQ(oks.load(), 0);
  EXPECT_EQ(errors.load(), 1);
}

TEST(MpiPool, AResultLargerThan64MiBArrivesWhole) {
  mp::mpi::Pool pool;
  const std::uint64_t n = (80ull << 20) + 123;  // several 16 MiB pieces
  const std::string s = pool.apply(big_string, n);
  ASSERT_EQ(s.size(), n);
  EXPECT_EQ(s, big_string(n));
}

TEST(MpiPool, AnArgumentLargerThan64MiBArrivesWhole) {
  mp::mpi::Pool pool;
  const std::string s = big_string((70ull << 20) + 5);
  EXPECT_EQ(pool.apply(checksum, s), checksum(s));
}

TEST(MpiPool, AResultThatDoesNotDecodeRaisesCodecErrorForItsTaskOnly) {
  mp::mpi::Pool pool;
  try {
    pool.apply(make_fragile, 1);
    ADD_FAILURE() << "no exception";
  } catch (const mp::CodecError& e) {
    EXPECT_NE(std::string(e.what()).find("Fragile cannot be decoded"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(pool.apply(square, 6), 36);
}

TEST(MpiPool, CloseThenJoinWaitsForEveryTask) {
  mp::mpi::Pool pool;
  std::vector<mp::AsyncResult<int>> rs;
  for (int i = 0; i < 6; ++i) rs.push_back(pool.apply_async(sleep_ms, 50));
  pool.close();
  pool.join();
  for (auto& r : rs) {
    EXPECT_TRUE(r.ready());
    EXPECT_EQ(r.get(), 50);
  }
}

TEST(MpiPool, JoinWhileRunningRaisesValueError) {
  mp::mpi::Pool pool;
  EXPECT_THROW(pool.join(), mp::ValueError);
}

TEST(MpiPool, SubmittingAfterCloseRaisesPoolNotRunning) {
  mp::mpi::Pool pool;
  pool.close();
  try {
    pool.apply_async(square, 1);
    ADD_FAILURE() << "no exception";
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "Pool not running");
  }
  pool.join();
}

TEST(MpiPool, TerminateFailsPendingResultsAtOnceAndJoinWaitsForRunningTasks) {
  mp::mpi::Pool pool;
  std::vector<mp::AsyncResult<int>> rs;
  for (int i = 0; i < 20; ++i) rs.push_back(pool.apply_async(sleep_ms, 200));
  std::this_thread::sleep_for(50ms);  // two of them start
  const auto start = Clock::now();
  pool.terminate();
  for (auto& r : rs) EXPECT_THROW(r.get(), mp::ProcessError);
  EXPECT_LT(Clock::now() - start, 1s);
  pool.join();  // the two running tasks end (200 ms); the queued ones never start
  EXPECT_LT(Clock::now() - start, 3s);
  mp::mpi::Pool next;  // the ranks serve the next pool
  EXPECT_EQ(next.apply(square, 3), 9);
}

TEST(MpiPool, DestructorTerminatesAndTheRanksServeTheNextPool) {
  std::optional<mp::AsyncResult<int>> r;
  {
    mp::mpi::Pool pool;
    for (int i = 0; i < 10; ++i) r = pool.apply_async(sleep_ms, 100);
  }
  EXPECT_THROW(r->get(), mp::ProcessError);
  mp::mpi::Pool next;
  EXPECT_EQ(next.map(square, iota(10)), squares(10));
}

TEST(MpiPool, TwoPoolsShareTheRanks) {
  mp::mpi::Pool a;
  mp::mpi::Pool b;
  auto ra = a.map_async(square, iota(500), 1);
  auto rb = b.map_async(square, iota(300), 3);
  EXPECT_EQ(rb.get(), squares(300));
  EXPECT_EQ(ra.get(), squares(500));
}

// A worker sends one Pool's messages in order, but never behind another
// Pool's: a large result that nobody collects yet (it needs rank 0 to take
// it) holds back neither a new Pool's opening nor another Pool's results.
TEST(MpiPool, APoolsUncollectedLargeResultsHoldBackNoOtherPool) {
  mp::mpi::Pool a;
  auto big = a.map_async(big_string, std::vector<std::uint64_t>(2, 8ull << 20), 1);
  std::this_thread::sleep_for(300ms);  // both results are sent; nobody takes them
  mp::mpi::Pool b;
  EXPECT_EQ(b.map(square, iota(20), 1), squares(20));
  const std::vector<std::string> got = big.get();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1], big_string(8ull << 20));
}

TEST(MpiPool, SeveralThreadsMayUseOnePool) {
  mp::mpi::Pool pool;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      if (pool.map(square, iota(300), 2) == squares(300)) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 3);
}

TEST(MpiPool, InitializerRunsOnEveryWorkerBeforeItsTasks) {
  mp::mpi::Pool pool(mp::mpi::PoolOptions{.initializer = init_worker});
  const std::vector<int> got = pool.map(read_initialized, std::vector<int>(8, 0), 1);
  EXPECT_EQ(got, std::vector<int>(8, 42));
}

TEST(MpiPool, AnInitializerThatThrowsBreaksThePool) {
  mp::mpi::Pool pool(mp::mpi::PoolOptions{.initializer = init_that_throws});
  try {
    pool.apply(square, 2);
    ADD_FAILURE() << "no exception";
  } catch (const mp::BrokenPoolError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("std::runtime_error"), std::string::npos) << what;
    EXPECT_NE(what.find("no database on this rank"), std::string::npos) << what;
  }
}

// Waiting must not keep a core busy (the machine is oversubscribed: three
// ranks on two cores): rank 0 waiting for a sleeping task, and a worker rank
// with nothing to do, each use a small part of a core.
TEST(MpiPool, WaitingRanksDoNotSpin) {
  mp::mpi::Pool pool;
  const auto cpu0 = process_cpu_ns();
  const auto wall0 = Clock::now();
  EXPECT_EQ(pool.apply(sleep_ms, 500), 500);
  const double wall = std::chrono::duration<double, std::nano>(Clock::now() - wall0).count();
  EXPECT_LT(static_cast<double>(process_cpu_ns() - cpu0), 0.25 * wall)
      << "rank 0 spun while waiting";

  const auto before = pool.map(cpu_sample, std::vector<int>(2, 20), 1);
  std::this_thread::sleep_for(500ms);  // both workers idle
  const auto after = pool.map(cpu_sample, std::vector<int>(2, 20), 1);
  std::map<int, std::int64_t> used;
  for (const auto& [pid, ns] : before) used[pid] -= ns;
  for (const auto& [pid, ns] : after) used[pid] += ns;
  ASSERT_EQ(used.size(), 2u);
  for (const auto& [pid, ns] : used) {
    EXPECT_LT(ns, 125'000'000) << "idle worker pid " << pid << " used " << ns / 1e6
                               << " ms of CPU in ~520 ms";
  }
}

// ---- the dynamic mode: workers spawned by the Pool ---------------------------

TEST(MpiPoolSpawn, SpawnedWorkersRunTheTasksAndExitAtJoin) {
  mp::mpi::Pool pool(mp::mpi::PoolOptions{.spawn = 2});
  EXPECT_EQ(pool.processes(), 2);
  EXPECT_EQ(pool.map(square, iota(200), 3), squares(200));
  const std::vector<int> pids = pool.map(pid_after_ms, std::vector<int>(2, 100), 1);
  EXPECT_EQ(std::set<int>(pids.begin(), pids.end()).size(), 2u);
  pool.close();
  pool.join();
  for (int pid : pids) {
    // Spawned by the launcher's daemon, not by this process: poll for exit.
    const auto until = Clock::now() + 10s;
    while (::kill(pid, 0) == 0 && Clock::now() < until) std::this_thread::sleep_for(20ms);
    EXPECT_NE(::kill(pid, 0), 0) << "spawned worker " << pid << " still runs after join()";
  }
}

TEST(MpiPoolSpawn, SpawnOfFewerThanOneRaisesValueError) {
  EXPECT_THROW(mp::mpi::Pool(mp::mpi::PoolOptions{.spawn = 0}), mp::ValueError);
}

// ---- launches of their own ------------------------------------------------------

struct Launch {
  int status = -1;  // as waitpid's
  std::string output;
  std::chrono::duration<double> took{};
  bool timed_out = false;
};

// run runs argv with the environment of this process minus the launcher's
// variables of this job (a nested launch must not think it is part of it),
// output captured, killed after `limit`.
Launch run(const std::vector<std::string>& argv, std::chrono::seconds limit) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string_view v(*e);
    const bool launcher = v.starts_with("OMPI_") || v.starts_with("PMIX_") ||
                          v.starts_with("ORTE_") || v.starts_with("OPAL_") ||
                          v.starts_with("HWLOC_");
    if (!launcher || v.starts_with("OMPI_ALLOW_RUN_AS_ROOT")) env.emplace_back(v);
  }
  std::vector<char*> envp, args;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> copy = argv;
  for (auto& s : copy) args.push_back(s.data());
  args.push_back(nullptr);
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return {};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  Launch r;
  pid_t pid = -1;
  const auto start = Clock::now();
  const int rc = posix_spawnp(&pid, args[0], &fa, &attr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    r.output = fmt::format("posix_spawnp {}: {}", argv[0], std::strerror(rc));
    return r;
  }
  char buf[4096];
  for (;;) {
    const auto left = limit - (Clock::now() - start);
    if (left <= 0s) {
      r.timed_out = true;
      ::kill(-pid, SIGKILL);
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int ms =
        static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(left).count()) + 1;
    if (::poll(&p, 1, ms) <= 0) continue;
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    r.output.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  ::waitpid(pid, &r.status, 0);
  r.took = Clock::now() - start;
  ::kill(-pid, SIGKILL);  // anything of that launch left behind
  return r;
}

std::string scenarios(const char* name = "mpi_pool_scenarios") {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* ws = std::getenv("TEST_WORKSPACE");
  if (!srcdir || !ws) return std::string("conformance/") + name;
  return fmt::format("{}/{}/conformance/{}", srcdir, ws, name);
}

std::vector<std::string> mpirun(int n) {
  return {"mpirun", "-n", std::to_string(n), "--oversubscribe", "--mca", "btl", "tcp,self"};
}

template <class... S>
std::vector<std::string> cat(std::vector<std::string> a, S&&... more) {
  (a.insert(a.end(), more.begin(), more.end()), ...);
  return a;
}

TEST(MpiPoolLaunch, PoolOnOneRankRaisesValueErrorSayingHowToLaunch) {
  const Launch r = run(cat(mpirun(1), std::vector<std::string>{scenarios(), "one_rank"}), 60s);
  ASSERT_FALSE(r.timed_out) << r.output;
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << r.output;
  EXPECT_NE(r.output.find("ValueError: mp::mpi::Pool needs at least two ranks"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("mpirun -n N"), std::string::npos) << r.output;
}

TEST(MpiPoolLaunch, ARankRunningAnotherBuildMakesThePoolRaiseProcessError) {
  const Launch r =
      run(cat(mpirun(1), std::vector<std::string>{scenarios(), "other_build", ":", "-n", "1",
                                                  scenarios("mpi_pool_scenarios_other")}),
          60s);
  ASSERT_FALSE(r.timed_out) << r.output;
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << r.output;
  EXPECT_NE(r.output.find("ProcessError: mp::mpi::Pool: rank 1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("runs a different executable than rank 0: build id"), std::string::npos)
      << r.output;
}

// Open MPI 4.1 has no fault tolerance: a worker rank that dies ends the job.
// What the user gets is mpirun's message and a failed exit, soon; never a
// hang.
TEST(MpiPoolLaunch, AWorkerRankThatDiesEndsTheJobWithinSeconds) {
  const Launch r = run(cat(mpirun(3), std::vector<std::string>{scenarios(), "dead_worker"}), 90s);
  ASSERT_FALSE(r.timed_out) << "the job hung after a worker rank died:\n" << r.output;
  EXPECT_FALSE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << r.output;
  EXPECT_NE(r.output.find("exited on signal 9"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("UNREACHABLE"), std::string::npos) << r.output;
  EXPECT_LT(r.took, 30s);
}

TEST(MpiPoolLaunch, WithoutMpirunAPoolSpawnsItsWorkers) {
  const Launch r = run({scenarios(), "singleton_spawn"}, 90s);
  ASSERT_FALSE(r.timed_out) << r.output;
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << r.output;
  EXPECT_NE(r.output.find("OK 3 workers"), std::string::npos) << r.output;
}

}  // namespace

int main(int argc, char** argv) {
  mp::mpi::Runtime rt(argc, argv);  // ranks 1 and 2 serve the tests' pools here
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
