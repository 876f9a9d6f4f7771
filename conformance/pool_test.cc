// Conformance: multiprocessing.Pool — CPython documentation, "Process Pools"
// (multiprocessing.pool.Pool, AsyncResult, map/imap/imap_unordered/starmap,
// close/terminate/join) and the programming guidelines on worker reuse,
// plus issue 5's "where mp is better than CPython": worker death
// (bpo-22393), failing initializers (gh-87472), Ctrl-C, unencodable results.
#include "mp/pool.h"

#include <cxxabi.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#include "conformance/test_util.h"
#include "mp/os.h"
#include "mp/process.h"
#include "mp/shared.h"

namespace {
struct Explosive {
  int v;
};
}  // namespace

template <>
struct mp::codec_traits<Explosive> {
  static void encode(mp::Encoder& e, const Explosive& x) {
    if (x.v < 0) throw mp::CodecError("cannot encode a negative Explosive");
    e.write(x.v);
  }
  static Explosive decode(mp::Decoder& d) { return Explosive{d.read<int>()}; }
};

namespace {

// Issue 15 item 11: a trivially copyable item whose traits validate.
struct Positive {
  int v;
};
}  // namespace

template <>
struct mp::codec_traits<Positive> {
  static void encode(mp::Encoder& e, const Positive& x) {
    if (x.v <= 0) throw mp::CodecError("Positive: not positive");
    e.write(x.v);
  }
  static Positive decode(mp::Decoder& d) { return Positive{d.read<int>()}; }
};

namespace {

using namespace std::chrono_literals;
using mp_test::Stopwatch;

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }
int sleep_ms(int ms) {
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  return ms;
}
int my_pid() { return ::getpid(); }
std::string my_name() { return mp::current_process().name(); }
std::size_t length(const std::string& s) { return s.size(); }
void nothing() {}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Span: which process ran a task and when (steady_clock is system-wide).
using Span = std::tuple<int, std::int64_t, std::int64_t>;
Span timed_work(int ms) {
  const std::int64_t start = now_ns();
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  return Span{::getpid(), start, now_ns()};
}

// (pid, number of tasks this process ran so far): shows chunk boundaries.
int g_calls = 0;
std::pair<int, int> pid_and_call(int) { return {::getpid(), ++g_calls}; }

struct CustomError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct RegisteredError : std::runtime_error {
  explicit RegisteredError(const std::string& m) : std::runtime_error(m) {}
};

int throw_runtime(int) { throw std::runtime_error("runtime boom"); }
int throw_invalid(int) { throw std::invalid_argument("invalid boom"); }
int throw_out_of_range(int) { throw std::out_of_range("range boom"); }
int throw_logic(int) { throw std::logic_error("logic boom"); }
int throw_value_error(int) { throw mp::ValueError("value boom"); }
int throw_custom(int) { throw CustomError("custom boom"); }
int throw_registered(int) { throw RegisteredError("registered boom"); }
int throw_int(int) { throw 42; }
int fail_on_three(int x) {
  if (x == 3) throw std::runtime_error("three");
  if (x == 0) ::usleep(400 * 1000);
  return x;
}
Explosive explosive(int v) { return Explosive{v}; }
std::string big_string(int n) { return std::string(static_cast<std::size_t>(n), 'x'); }

// write_pid_then_sleep tells the test which process runs it, then works.
int write_pid_then_sleep(int fd, int ms) {
  int pid = ::getpid();
  if (::write(fd, &pid, sizeof pid) != sizeof pid) return -1;
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  return pid;
}

int write_pid_then_sleep_all(int fd) { return write_pid_then_sleep(fd, 10000); }

int g_initialized = 0;
volatile sig_atomic_t g_sigint = 0;

// ---------------------------------------------------------------- creation

TEST(Pool, DefaultStartsCpuCountWorkers) {
  mp::Pool pool;
  EXPECT_EQ(pool.processes(), mp::cpu_count());
  EXPECT_EQ(static_cast<int>(mp::active_children().size()), mp::cpu_count());
}

TEST(Pool, StartsExactlyNWorkers) {
  mp::Pool pool(3);
  EXPECT_EQ(pool.processes(), 3);
  EXPECT_EQ(mp::active_children().size(), 3u);
}

TEST(Pool, ProcessesBelowOneRaisesValueError) {
  EXPECT_THROW(mp::Pool(0), mp::ValueError);
  EXPECT_THROW(mp::Pool(-2), mp::ValueError);
  try {
    mp::Pool p(0);
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "Number of processes must be at least 1");
  }
}

TEST(Pool, MaxtasksperchildBelowOneRaisesValueError) {
  EXPECT_THROW(mp::Pool(mp::PoolOptions{.processes = 1, .maxtasksperchild = 0}), mp::ValueError);
  EXPECT_THROW(mp::Pool(mp::PoolOptions{.processes = 1, .maxtasksperchild = -1}), mp::ValueError);
}

TEST(Pool, WorkersAreNamedPoolWorkerN) {
  mp::Pool pool(2);
  auto names =
      pool.map([](int) { return mp::current_process().name(); }, std::vector<int>(20, 0), 1);
  for (const auto& n : names) EXPECT_TRUE(n == "PoolWorker-1" || n == "PoolWorker-2") << n;
}

// ------------------------------------------------------------------ apply

TEST(Pool, ApplyReturnsTheResult) {
  mp::Pool pool(2);
  EXPECT_EQ(pool.apply(square, 7), 49);
  EXPECT_EQ(pool.apply(add, 2, 3), 5);
  EXPECT_EQ(pool.apply([](int a, int b) { return a * b; }, 6, 7), 42);
  EXPECT_EQ(pool.apply(length, "four"), 4u);  // converted to std::string in the caller
  pool.apply(nothing);
}

TEST(Pool, ApplyRunsInAnotherProcess) {
  mp::Pool pool(1);
  EXPECT_NE(pool.apply(my_pid), ::getpid());
  EXPECT_EQ(pool.apply(my_name), "PoolWorker-1");
}

TEST(Pool, ApplyBlocksUntilResultIsReady) {
  mp::Pool pool(1);
  Stopwatch sw;
  EXPECT_EQ(pool.apply(sleep_ms, 300), 300);
  EXPECT_GE(sw.elapsed(), 250ms);
  EXPECT_LT(sw.elapsed(), 1300ms);
}

TEST(Pool, ApplyAsyncReturnsAtOnce) {
  mp::Pool pool(1);
  Stopwatch sw;
  auto r = pool.apply_async(sleep_ms, 400);
  EXPECT_LT(sw.elapsed(), 200ms);
  EXPECT_FALSE(r.ready());
  EXPECT_EQ(r.get(), 400);
  EXPECT_TRUE(r.ready());
}

TEST(Pool, TasksRunWhileNobodyWaits) {
  MP_FORK_ONLY("the task writes to an fd number the worker inherited");
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  mp::Pool pool(1);
  auto r = pool.apply_async(write_pid_then_sleep, fds[1], 0);
  int pid = 0;
  ASSERT_EQ(::read(fds[0], &pid, sizeof pid), static_cast<ssize_t>(sizeof pid));  // no get() yet
  EXPECT_EQ(r.get(), pid);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(Pool, GetWithTimeoutRaisesTimeoutErrorAndTaskKeepsRunning) {
  mp::Pool pool(1);
  auto r = pool.apply_async(sleep_ms, 600);
  Stopwatch sw;
  EXPECT_THROW(r.get(200ms), mp::TimeoutError);
  EXPECT_GE(sw.elapsed(), 150ms);
  EXPECT_LT(sw.elapsed(), 1200ms);
  EXPECT_EQ(r.get(), 600);
}

TEST(Pool, WaitWithTimeoutReturnsWithoutResult) {
  mp::Pool pool(1);
  auto r = pool.apply_async(sleep_ms, 500);
  Stopwatch sw;
  r.wait(100ms);
  EXPECT_GE(sw.elapsed(), 50ms);
  EXPECT_LT(sw.elapsed(), 1100ms);
  EXPECT_FALSE(r.ready());
  r.wait();
  EXPECT_TRUE(r.ready());
}

TEST(Pool, SuccessfulRaisesValueErrorUntilReady) {
  mp::Pool pool(1);
  auto r = pool.apply_async(sleep_ms, 300);
  EXPECT_THROW(r.successful(), mp::ValueError);
  r.wait();
  EXPECT_TRUE(r.successful());
  auto bad = pool.apply_async(throw_runtime, 1);
  bad.wait();
  EXPECT_FALSE(bad.successful());
}

TEST(Pool, CallbackRunsExactlyOnceBeforeGetReturns) {
  mp::Pool pool(2);
  int calls = 0;
  int seen = 0;
  auto r = pool.apply_async(mp::Callbacks{.callback =
                                              [&](const int& v) {
                                                ++calls;
                                                seen = v;
                                              }},
                            square, 9);
  EXPECT_EQ(r.get(), 81);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen, 81);
  r.get();
  r.wait();
  EXPECT_EQ(calls, 1);
}

TEST(Pool, GetReturnsOnlyAfterTheCallbackFinishedInAnyThread) {
  mp::set_fork_warning(false);
  mp::Pool pool(1);
  std::atomic<bool> callback_done{false};
  auto r = pool.apply_async(mp::Callbacks{.callback =
                                              [&](const int&) {
                                                std::this_thread::sleep_for(300ms);
                                                callback_done = true;
                                              }},
                            square, 2);
  std::atomic<int> early{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      r.get();
      if (!callback_done) ++early;
      if (!r.ready()) ++early;
    });
  }
  r.get();
  EXPECT_TRUE(callback_done);
  for (auto& th : threads) th.join();
  EXPECT_EQ(early.load(), 0);
  mp::set_fork_warning(true);
}

TEST(Pool, ErrorCallbackReceivesTheTaskError) {
  mp::Pool pool(1);
  int calls = 0;
  std::string message;
  auto r = pool.apply_async(mp::Callbacks{.callback = [&](const int&) { FAIL(); },
                                          .error_callback =
                                              [&](std::exception_ptr e) {
                                                ++calls;
                                                try {
                                                  std::rethrow_exception(e);
                                                } catch (const std::exception& x) {
                                                  message = x.what();
                                                }
                                              }},
                            throw_runtime, 1);
  EXPECT_THROW(r.get(), std::runtime_error);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(message, "runtime boom");
}

TEST(Pool, CallbackThatThrowsIsReportedAndPoolStaysUsable) {
  mp::Pool pool(1);
  testing::internal::CaptureStderr();
  auto r = pool.apply_async(
      mp::Callbacks{.callback = [](const int&) { throw std::runtime_error("cb boom"); }}, square,
      3);
  EXPECT_EQ(r.get(), 9);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("cb boom"), std::string::npos) << err;
  EXPECT_EQ(pool.apply(square, 4), 16);
}

TEST(Pool, OnlyFunctionPointersAndStatelessCallablesAreTasks) {
  // A call with any other callable does not compile (static_assert naming
  // the rule); PoolTask is the same test as a concept.
  int captured = 3;
  static_assert(mp::PoolTask<decltype(&square)>);
  static_assert(mp::PoolTask<decltype(square)>);
  static_assert(mp::PoolTask<decltype([](int x) { return x; })>);
  static_assert(!mp::PoolTask<decltype([captured](int x) { return x + captured; })>);
  static_assert(!mp::PoolTask<std::function<int(int)>>);
  (void)captured;
}

TEST(Pool, CanBeUsedFromSeveralThreads) {
  mp::set_fork_warning(false);
  mp::Pool pool(2);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        if (pool.apply(add, t, i) != t + i) ++wrong;
      }
      auto v = pool.map(square, std::vector<int>{1, 2, 3}, 1);
      if (v != std::vector<int>{1, 4, 9}) ++wrong;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  mp::set_fork_warning(true);
}

// ------------------------------------------------------------ exceptions

TEST(Pool, StdExceptionsAreRethrownAsTheirTypeEveryTime) {
  mp::Pool pool(1);
  auto r = pool.apply_async(throw_runtime, 1);
  for (int i = 0; i < 2; ++i) {
    try {
      r.get();
      FAIL();
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "runtime boom");
    }
  }
  EXPECT_THROW(pool.apply(throw_invalid, 1), std::invalid_argument);
  EXPECT_THROW(pool.apply(throw_out_of_range, 1), std::out_of_range);
  EXPECT_THROW(pool.apply(throw_logic, 1), std::logic_error);
}

TEST(Pool, MpErrorsAreRethrownAsTheirType) {
  mp::Pool pool(1);
  try {
    pool.apply(throw_value_error, 1);
    FAIL();
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "value boom");
  }
}

TEST(Pool, UnknownExceptionTypeBecomesRemoteErrorWithTypeAndMessage) {
  mp::Pool pool(1);
  try {
    pool.apply(throw_custom, 1);
    FAIL();
  } catch (const mp::RemoteError& e) {
    EXPECT_NE(e.type_name().find("CustomError"), std::string::npos) << e.type_name();
    EXPECT_EQ(e.message(), "custom boom");
  }
  try {
    pool.apply(throw_int, 1);
    FAIL();
  } catch (const mp::RemoteError& e) {
    EXPECT_EQ(e.type_name(), "int");
  }
}

TEST(Pool, RegisteredExceptionIsRethrownAsItsType) {
  mp::register_exception<RegisteredError>();
  mp::Pool pool(1);
  try {
    pool.apply(throw_registered, 1);
    FAIL();
  } catch (const RegisteredError& e) {
    EXPECT_STREQ(e.what(), "registered boom");
  }
}

// ---------------------------------------------------------------- one error taxonomy

// Every mp error type, by index, from the one list in mp/errors.h.
std::vector<std::string> mp_error_names() {
  std::vector<std::string> names;
#define NAME_OF(Name) names.push_back("mp::" #Name);
  MP_ERROR_TYPES(NAME_OF)
#undef NAME_OF
  return names;
}

template <class E>
E make_error(const std::string& what) {
  if constexpr (std::is_same_v<E, mp::BufferTooShort>) {
    return E(what, "");
  } else if constexpr (std::is_same_v<E, mp::RemoteError>) {
    return E("SomeRemoteType", what);
  } else if constexpr (std::is_same_v<E, mp::WorkerLostError>) {
    return E(what, 0, 0);
  } else {
    return E(what);
  }
}

std::string taxonomy_message(int index) { return fmt::format("taxonomy boom {}", index); }

// throw_mp_error(i) raises the i-th mp error type with taxonomy_message(i).
int throw_mp_error(int index) {
  int i = 0;
#define THROW_IF(Name) \
  if (i++ == index) throw make_error<mp::Name>(taxonomy_message(index));
  MP_ERROR_TYPES(THROW_IF)
#undef THROW_IF
  return -1;
}

// make_error_what(i) is the what() of the i-th error as the task raises it.
std::string make_error_what(int index) {
  try {
    (void)throw_mp_error(index);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// name_of_current_exception() is the demangled type of the exception being handled.
std::string name_of_current_exception() {
  const std::type_info* t = abi::__cxa_current_exception_type();
  if (!t) return "none";
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(
      abi::__cxa_demangle(t->name(), nullptr, nullptr, &status), std::free);
  return status == 0 && p ? p.get() : t->name();
}

TEST(ErrorTaxonomy, EveryMpErrorRaisedInAPoolTaskReachesTheCallerAsItself) {
  const std::vector<std::string> names = mp_error_names();
  mp::Pool pool(1);
  for (int i = 0; i < static_cast<int>(names.size()); ++i) {
    const std::string expected_what = make_error_what(i);
    try {
      pool.apply(throw_mp_error, i);
      ADD_FAILURE() << names[i] << " was not raised";
    } catch (const mp::Error& e) {
      EXPECT_EQ(name_of_current_exception(), names[i])
          << "raised " << names[i] << ", got " << e.what();
      EXPECT_EQ(std::string(e.what()), expected_what) << names[i];
    } catch (...) {
      ADD_FAILURE() << names[i] << " arrived as " << name_of_current_exception();
    }
  }
}

// exit_with_mp_error(i, path) sends its stderr to path, then raises the i-th
// mp error type out of the process's target.
void exit_with_mp_error(int index, const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::dup2(fd, 2);
    ::close(fd);
  }
  (void)throw_mp_error(index);
}

TEST(ErrorTaxonomy, AProcessWhoseTargetRaisesAnMpErrorExitsWithOneAndNamesTheType) {
  const std::vector<std::string> names = mp_error_names();
  char dir_template[] = "/tmp/mp_taxonomy_XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  for (int i = 0; i < static_cast<int>(names.size()); ++i) {
    const std::string path = fmt::format("{}/stderr{}", dir, i);
    mp::Process p(exit_with_mp_error, i, path);
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), std::optional<int>(1)) << names[i];
    std::string text;
    if (FILE* f = std::fopen(path.c_str(), "r")) {
      char buf[4096];
      std::size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
      std::fclose(f);
    }
    ::unlink(path.c_str());
    EXPECT_NE(text.find(fmt::format("{}: {}", names[i], make_error_what(i))), std::string::npos)
        << names[i] << " printed: " << text;
  }
  ::rmdir(dir.c_str());
}

TEST(Pool, UnencodableResultFailsThatTaskOnly) {
  mp::Pool pool(1);
  auto bad = pool.apply_async(explosive, -1);
  auto good = pool.apply_async(explosive, 5);
  EXPECT_THROW(bad.get(), mp::CodecError);
  EXPECT_EQ(good.get().v, 5);
  EXPECT_EQ(pool.apply(square, 2), 4);
}

TEST(Pool, LargeResultIsStreamedWhole) {
  mp::Pool pool(mp::PoolOptions{.processes = 1, .result_buffer_bytes = 64 << 10});
  const std::string s = pool.apply(big_string, 3 << 20);
  EXPECT_EQ(s.size(), 3u << 20);
  EXPECT_EQ(std::count(s.begin(), s.end(), 'x'), 3 << 20);
  EXPECT_EQ(pool.apply(square, 3), 9);
}

TEST(Pool, ArgumentsLargerThanTheTaskBufferRaiseAtSubmit) {
  mp::Pool pool(mp::PoolOptions{.processes = 1, .task_buffer_bytes = 64 << 10});
  EXPECT_THROW(pool.apply_async(length, std::string(100 << 10, 'a')), mp::ValueError);
  EXPECT_EQ(pool.apply(length, std::string(10 << 10, 'a')), 10u << 10);
}

// --------------------------------------------------------------------- map

int positive_value(Positive p) { return p.v; }

TEST(Pool, MapItemsGoThroughTheUsersCodecTraitsLikeApply) {
  mp::Pool pool(1);
  EXPECT_THROW(pool.apply(positive_value, Positive{-1}), mp::CodecError);
  EXPECT_THROW(pool.map(positive_value, std::vector<Positive>{{1}, {-1}}), mp::CodecError);
  EXPECT_EQ(pool.map(positive_value, std::vector<Positive>{{1}, {2}}), (std::vector<int>{1, 2}));
}

TEST(Pool, MapReturnsResultsInInputOrder) {
  mp::Pool pool(2);
  std::vector<int> in(1000);
  for (int i = 0; i < 1000; ++i) in[i] = i;
  for (std::optional<int> cs : {std::optional<int>{}, std::optional<int>{1}, std::optional<int>{7},
                                std::optional<int>{5000}}) {
    auto out = pool.map(square, in, cs);
    ASSERT_EQ(out.size(), in.size());
    for (int i = 0; i < 1000; ++i) ASSERT_EQ(out[i], i * i);
  }
}

TEST(Pool, DefaultChunksizeFormulaIsCPythons) {
  EXPECT_EQ(mp::pool_detail::default_chunksize(100, 2), 13u);
  EXPECT_EQ(mp::pool_detail::default_chunksize(96, 2), 12u);
  EXPECT_EQ(mp::pool_detail::default_chunksize(3, 4), 1u);
  EXPECT_EQ(mp::pool_detail::default_chunksize(200000, 2), 25000u);
}

TEST(Pool, MapDefaultChunksizeIsCeilLenOverFourTimesWorkers) {
  mp::Pool pool(2);
  // 100 items on 2 workers: chunks of ceil(100 / 8) = 13 items, each run
  // back to back by one process.
  auto out = pool.map(pid_and_call, std::vector<int>(100, 0));
  for (int i = 0; i + 1 < 100; ++i) {
    const bool same_chunk = (i + 1) % 13 != 0;
    if (same_chunk) {
      EXPECT_EQ(out[i + 1].first, out[i].first) << i;
      EXPECT_EQ(out[i + 1].second, out[i].second + 1) << i;
    }
  }
}

TEST(Pool, TasksBeyondTheTaskBufferAreQueuedAndAllComplete) {
  mp::Pool pool(mp::PoolOptions{.processes = 2, .task_buffer_bytes = 4096});
  auto out = pool.map(square, std::views::iota(0, 5000), 1);
  ASSERT_EQ(out.size(), 5000u);
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(out[i], i * i);
  std::vector<mp::AsyncResult<int>> rs;
  for (int i = 0; i < 2000; ++i) rs.push_back(pool.apply_async(add, i, 1));
  for (int i = 0; i < 2000; ++i) ASSERT_EQ(rs[i].get(), i + 1);
  long sum = 0;
  for (int v : pool.imap_unordered(square, std::views::iota(0, 3000))) sum += v;
  EXPECT_EQ(sum, 8995500500L);
}

TEST(Pool, ChunksizeBelowOneRaisesValueError) {
  mp::Pool pool(1);
  std::vector<int> in{1, 2, 3};
  EXPECT_THROW(pool.map(square, in, 0), mp::ValueError);
  EXPECT_THROW(pool.map_async(square, in, -1), mp::ValueError);
  EXPECT_THROW(pool.imap(square, in, 0), mp::ValueError);
  EXPECT_THROW(pool.imap_unordered(square, in, 0), mp::ValueError);
  EXPECT_THROW(pool.starmap(add, std::vector<std::tuple<int, int>>{{1, 2}}, 0), mp::ValueError);
}

TEST(Pool, EmptyInputGivesEmptyResult) {
  mp::Pool pool(1);
  std::vector<int> none;
  EXPECT_TRUE(pool.map(square, none).empty());
  EXPECT_TRUE(pool.map_async(square, none).get().empty());
  EXPECT_TRUE(pool.starmap(add, std::vector<std::tuple<int, int>>{}).empty());
  auto it = pool.imap(square, none);
  EXPECT_FALSE(it.next().has_value());
  auto un = pool.imap_unordered(square, none);
  EXPECT_FALSE(un.next().has_value());
}

TEST(Pool, MapRaisesFirstErrorOnceAllChunksFinished) {
  mp::Pool pool(2);
  Stopwatch sw;
  // Item 0 takes 400 ms; item 3 fails at once.
  EXPECT_THROW(pool.map(fail_on_three, std::vector<int>{0, 1, 2, 3, 4}, 1), std::runtime_error);
  EXPECT_GE(sw.elapsed(), 350ms);
}

TEST(Pool, MapAsyncDeliversVectorAndCallback) {
  mp::Pool pool(2);
  int calls = 0;
  auto r = pool.map_async(
      mp::Callbacks{.callback = [&](const std::vector<int>& v) { calls += v.size(); }}, square,
      std::vector<int>{1, 2, 3});
  EXPECT_EQ(r.get(), (std::vector<int>{1, 4, 9}));
  EXPECT_EQ(calls, 3);
}

TEST(Pool, MapOfVoidFunctionRunsEveryItem) {
  mp::Pool pool(2);
  pool.map([](int) {}, std::vector<int>(10, 1));
  auto r = pool.map_async([](int) {}, std::vector<int>(10, 1));
  r.get();
  EXPECT_TRUE(r.successful());
}

TEST(Pool, StarmapUnpacksTuples) {
  mp::Pool pool(2);
  std::vector<std::tuple<int, int>> in{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(pool.starmap(add, in), (std::vector<int>{3, 7, 11}));
  EXPECT_EQ(pool.starmap_async(add, in, 1).get(), (std::vector<int>{3, 7, 11}));
  EXPECT_EQ(pool.starmap([](int a, int b) { return a * b; }, in), (std::vector<int>{2, 12, 30}));
}

// -------------------------------------------------------------------- imap

TEST(Pool, ImapYieldsResultsInOrder) {
  mp::Pool pool(2);
  std::vector<int> in{40, 0, 20, 0, 10};
  std::vector<int> out;
  for (int v : pool.imap(sleep_ms, in)) out.push_back(v);
  EXPECT_EQ(out, in);
  std::vector<int> chunked;
  for (int v : pool.imap(square, std::vector<int>{1, 2, 3, 4, 5}, 2)) chunked.push_back(v);
  EXPECT_EQ(chunked, (std::vector<int>{1, 4, 9, 16, 25}));
}

TEST(Pool, ImapNextWithTimeoutRaisesTimeoutError) {
  mp::Pool pool(1);
  auto it = pool.imap(sleep_ms, std::vector<int>{500});
  Stopwatch sw;
  EXPECT_THROW(it.next(100ms), mp::TimeoutError);
  EXPECT_GE(sw.elapsed(), 50ms);
  EXPECT_LT(sw.elapsed(), 1100ms);
  EXPECT_EQ(it.next(), 500);
  EXPECT_FALSE(it.next().has_value());
}

TEST(Pool, ImapRaisesAFailedChunksErrorAtItsPlaceOnce) {
  mp::Pool pool(2);
  auto it = pool.imap(fail_on_three, std::vector<int>{1, 2, 3, 4});
  EXPECT_EQ(it.next(), 1);
  EXPECT_EQ(it.next(), 2);
  EXPECT_THROW(it.next(), std::runtime_error);
  EXPECT_EQ(it.next(), 4);
  EXPECT_FALSE(it.next().has_value());
}

TEST(Pool, ImapUnorderedYieldsEachResultOnceInCompletionOrder) {
  mp::Pool pool(2);
  auto it = pool.imap_unordered(sleep_ms, std::vector<int>{600, 1, 2, 3});
  std::vector<int> out;
  while (auto v = it.next()) out.push_back(*v);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out.back(), 600);  // the slow one completes last
  std::sort(out.begin(), out.end());
  EXPECT_EQ(out, (std::vector<int>{1, 2, 3, 600}));
}

// imap's input is read lazily (issue 15, item 15). These inputs run in the
// caller, so they may keep state; the tasks stay plain functions.
std::atomic<long> g_pulls{0};
int counted(int i) {
  g_pulls.fetch_add(1);
  return i;
}
int fails_at_seven(int i) {
  if (i == 7) throw std::invalid_argument("input failed at item 7");
  return i;
}
auto failing_input() { return std::views::iota(0, 20) | std::views::transform(fails_at_seven); }

TEST(PoolImapInput, ImapYieldsEveryEarlierResultThenRaisesTheInputsError) {
  mp::Pool pool(2);
  for (int chunksize : {1, 3}) {
    auto it = pool.imap(square, failing_input(), chunksize);
    for (int i = 0; i < 7; ++i) EXPECT_EQ(it.next(), i * i) << "chunksize " << chunksize;
    try {
      it.next();
      ADD_FAILURE() << "no error, chunksize " << chunksize;
    } catch (const std::invalid_argument& e) {
      EXPECT_STREQ(e.what(), "input failed at item 7");
    }
    EXPECT_FALSE(it.next().has_value());
  }
}

TEST(PoolImapInput, ImapUnorderedRaisesTheInputsErrorOnceAmongTheCompletedResults) {
  mp::Pool pool(2);
  for (int chunksize : {1, 3}) {
    auto it = pool.imap_unordered(square, failing_input(), chunksize);
    std::multiset<int> got;
    int errors = 0;
    for (;;) {
      try {
        auto v = it.next();
        if (!v) break;
        got.insert(*v);
      } catch (const std::invalid_argument& e) {
        EXPECT_STREQ(e.what(), "input failed at item 7");
        ++errors;
      }
    }
    EXPECT_EQ(errors, 1) << "chunksize " << chunksize;
    EXPECT_EQ(got, (std::multiset<int>{0, 1, 4, 9, 16, 25, 36})) << "chunksize " << chunksize;
  }
}

TEST(PoolImapInput, ImapPullsOnlyABoundedWayAheadOfTheResultsTaken) {
  mp::Pool pool(2);
  for (bool ordered : {true, false}) {
    g_pulls = 0;
    auto input = std::views::iota(0, 1'000'000) | std::views::transform(counted);
    auto it = ordered ? pool.imap(square, input) : pool.imap_unordered(square, input);
    long sum = 0;
    for (int i = 0; i < 1000; ++i) sum += *it.next();
    // The default bound: 4 * processes() chunks of one item in flight.
    EXPECT_LE(g_pulls.load(), 1000 + 4 * 2) << (ordered ? "imap" : "imap_unordered");
    if (ordered) {
      EXPECT_EQ(sum, 332833500L);
    }
  }
}

TEST(PoolImapInput, ImapOverAnInfiniteRangeTakesTheFirstResultsInBoundedMemory) {
  mp::Pool pool(2);
  for (bool ordered : {true, false}) {
    g_pulls = 0;
    auto input = std::views::iota(0) | std::views::transform(counted);
    // max_in_flight: 3 chunks of 5 items.
    auto it = ordered ? pool.imap(square, input, 5, 3) : pool.imap_unordered(square, input, 5, 3);
    std::set<int> seen;
    for (int i = 0; i < 1000; ++i) seen.insert(*it.next());
    EXPECT_EQ(seen.size(), 1000u);
    EXPECT_LE(g_pulls.load(), 1000 + 3 * 5);
    if (ordered) {
      EXPECT_EQ(*seen.rbegin(), 999 * 999);
    }
  }
}

TEST(PoolImapInput, MaxInFlightBelowOneRaisesValueError) {
  mp::Pool pool(1);
  EXPECT_THROW(pool.imap(square, std::vector<int>{1}, 1, 0), mp::ValueError);
  EXPECT_THROW(pool.imap_unordered(square, std::vector<int>{1}, 1, -2), mp::ValueError);
}

TEST(PoolImapInput, AnyBoundAndChunksizeGiveTheSameResults) {
  mp::Pool pool(3);
  std::vector<int> in(100);
  std::iota(in.begin(), in.end(), 0);
  std::vector<int> want;
  for (int x : in) want.push_back(x * x);
  for (int bound : {1, 2, 7, 1000}) {
    for (int chunksize : {1, 7, 100, 1000}) {
      std::vector<int> got;
      for (int v : pool.imap(square, in, chunksize, bound)) got.push_back(v);
      EXPECT_EQ(got, want) << "bound " << bound << " chunksize " << chunksize;
      std::vector<int> unordered;
      for (int v : pool.imap_unordered(square, in, chunksize, bound)) unordered.push_back(v);
      std::sort(unordered.begin(), unordered.end());
      EXPECT_EQ(unordered, want) << "bound " << bound << " chunksize " << chunksize;
    }
  }
}

TEST(PoolImapInput, DroppingTheIteratorEarlyThenCloseAndJoinReturn) {
  mp::Pool pool(2);
  {
    auto it =
        pool.imap(sleep_ms, std::views::iota(0) | std::views::transform([](int) { return 20; }));
    EXPECT_EQ(it.next(), 20);
    auto un = pool.imap_unordered(square, std::views::iota(0), 4);
    EXPECT_TRUE(un.next().has_value());
  }
  EXPECT_EQ(pool.apply(square, 5), 25);  // the pool still serves
  Stopwatch sw;
  pool.close();
  pool.join();
  EXPECT_LT(sw.elapsed(), 5s);
  EXPECT_TRUE(mp::active_children().empty());
}

TEST(PoolImapInput, AnIteratorKeepsSubmittingItsInputAfterClose) {
  mp::Pool pool(2);
  auto it = pool.imap(square, std::views::iota(0, 100));
  pool.close();
  long sum = 0;
  int n = 0;
  while (auto v = it.next()) {
    sum += *v;
    ++n;
  }
  EXPECT_EQ(n, 100);
  EXPECT_EQ(sum, 328350L);
  pool.join();
}

TEST(PoolImapInput, AfterJoinTheRestOfTheInputFailsAtItsPlaceWithPoolNotRunning) {
  mp::Pool pool(2);
  auto it = pool.imap(square, std::views::iota(0), 1, 2);  // chunks 0 and 1 start at once
  pool.close();
  pool.join();
  EXPECT_EQ(it.next(), 0);
  EXPECT_EQ(it.next(), 1);
  try {
    it.next();
    ADD_FAILURE() << "no error";
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "Pool not running");
  }
  EXPECT_FALSE(it.next().has_value());
}

TEST(PoolImapInput, SeveralThreadsShareOneIterator) {
  mp::Pool pool(2);
  auto it = pool.imap_unordered(square, std::views::iota(0, 3000), 3, 4);
  std::mutex mu;
  std::multiset<int> got;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      while (auto v = it.next()) {
        std::lock_guard lock(mu);
        got.insert(*v);
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(got.size(), 3000u);
  std::multiset<int> want;
  for (int i = 0; i < 3000; ++i) want.insert(i * i);
  EXPECT_EQ(got, want);
}

TEST(PoolImapInput, AnItemTooLargeForTheTaskBufferFailsAtItsPlace) {
  mp::Pool pool(mp::PoolOptions{.processes = 1, .task_buffer_bytes = 4096});
  std::vector<std::string> in{"a", "bb", std::string(5000, 'x'), "dddd"};
  auto it = pool.imap(length, in);
  EXPECT_EQ(it.next(), 1u);
  EXPECT_EQ(it.next(), 2u);
  EXPECT_THROW(it.next(), mp::ValueError);
  EXPECT_FALSE(it.next().has_value());
}

// -------------------------------------------------- close / terminate / join

TEST(Pool, CloseThenJoinCompletesEverySubmittedTask) {
  mp::Pool pool(2);
  std::vector<mp::AsyncResult<int>> rs;
  for (int i = 0; i < 6; ++i) rs.push_back(pool.apply_async(sleep_ms, 50 + i));
  pool.close();
  pool.join();
  for (int i = 0; i < 6; ++i) {
    EXPECT_TRUE(rs[i].ready());
    EXPECT_EQ(rs[i].get(), 50 + i);
  }
  EXPECT_TRUE(mp::active_children().empty());
}

TEST(Pool, JoinBeforeCloseRaisesPoolIsStillRunning) {
  mp::Pool pool(1);
  try {
    pool.join();
    FAIL();
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "Pool is still running");
  }
}

TEST(Pool, SubmitAfterCloseRaisesPoolNotRunning) {
  mp::Pool pool(1);
  pool.close();
  try {
    pool.apply(square, 1);
    FAIL();
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "Pool not running");
  }
  EXPECT_THROW(pool.map(square, std::vector<int>{1}), mp::ValueError);
  EXPECT_THROW(pool.imap(square, std::vector<int>{1}), mp::ValueError);
  EXPECT_THROW(pool.map(square, std::vector<int>{}), mp::ValueError);
}

TEST(Pool, SubmitAfterTerminateRaisesPoolNotRunning) {
  mp::Pool pool(1);
  pool.terminate();
  EXPECT_THROW(pool.apply_async(square, 1), mp::ValueError);
  pool.join();
}

TEST(Pool, TerminateStopsWorkersAndResolvesPendingResultsWithError) {
  mp::Pool pool(2);
  std::vector<mp::AsyncResult<int>> rs;
  for (int i = 0; i < 4; ++i) rs.push_back(pool.apply_async(sleep_ms, 10000));
  Stopwatch sw;
  pool.terminate();
  for (auto& r : rs) EXPECT_THROW(r.get(), mp::ProcessError);
  pool.join();
  EXPECT_LT(sw.elapsed(), 3s);
  EXPECT_TRUE(mp::active_children().empty());
}

TEST(Pool, DestructorTerminatesAndJoinsWorkers) {
  {
    mp::Pool pool(3);
    pool.apply_async(sleep_ms, 10000);
    EXPECT_EQ(mp::active_children().size(), 3u);
  }
  EXPECT_TRUE(mp::active_children().empty());
}

// open_fds counts this process's descriptors once mp's registry of children
// has dropped the ended ones (it does so in active_children()).
int open_fds() {
  mp::active_children();
  int n = 0;
  for (int fd = 0; fd < 1024; ++fd) n += ::fcntl(fd, F_GETFD) != -1;
  return n;
}

TEST(Pool, DestroyedPoolLeaksNoFileDescriptors) {
  // mp::Process keeps a few descriptors of its own per process (its
  // self-pidfd); a first pool sets them up.
  { mp::Pool warm_up(1); }
  const int before = open_fds();
  for (int round = 0; round < 3; ++round) {
    mp::Pool pool(mp::PoolOptions{.processes = 2, .maxtasksperchild = 1});
    for (int i = 0; i < 6; ++i) pool.apply(square, i);  // 6 replacements
  }
  EXPECT_EQ(open_fds(), before);
}

// ------------------------------------------------- reuse and the tutorial

TEST(PoolTutorial, FourWorkersFiveTasksFifthWaitsAndReusesAPid) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> ms(200, 500);
  mp::Pool pool(4);
  std::vector<mp::AsyncResult<Span>> rs;
  for (int i = 0; i < 5; ++i) rs.push_back(pool.apply_async(timed_work, ms(rng)));
  std::vector<Span> spans;
  for (auto& r : rs) spans.push_back(r.get());
  std::sort(spans.begin(), spans.end(),
            [](auto& a, auto& b) { return std::get<1>(a) < std::get<1>(b); });
  std::int64_t first_end = INT64_MAX;
  for (int i = 0; i < 4; ++i) first_end = std::min(first_end, std::get<2>(spans[i]));
  // Four start at once (before any finishes), the fifth after one finished.
  EXPECT_LT(std::get<1>(spans[3]), first_end);
  EXPECT_GE(std::get<1>(spans[4]), first_end - 2'000'000);
  std::set<int> first_pids;
  for (int i = 0; i < 4; ++i) first_pids.insert(std::get<0>(spans[i]));
  EXPECT_EQ(first_pids.size(), 4u);
  EXPECT_TRUE(first_pids.count(std::get<0>(spans[4]))) << "the fifth task ran in a reused pid";
}

TEST(PoolTutorial, FiveWorkersRunFiveTasksAtOnce) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> ms(200, 500);
  mp::Pool pool(5);
  std::vector<mp::AsyncResult<Span>> rs;
  for (int i = 0; i < 5; ++i) rs.push_back(pool.apply_async(timed_work, ms(rng)));
  std::int64_t first_end = INT64_MAX;
  std::int64_t last_start = 0;
  std::set<int> pids;
  for (auto& r : rs) {
    auto [pid, start, end] = r.get();
    first_end = std::min(first_end, end);
    last_start = std::max(last_start, start);
    pids.insert(pid);
  }
  EXPECT_LT(last_start, first_end);
  EXPECT_EQ(pids.size(), 5u);
}

TEST(PoolTutorial, ApplyRunsTasksOneAfterAnother) {
  mp::Pool pool(4);
  std::int64_t prev_end = 0;
  for (int i = 0; i < 4; ++i) {
    auto [pid, start, end] = pool.apply(timed_work, 50);
    EXPECT_GE(start, prev_end);
    prev_end = end;
  }
}

TEST(Pool, RunsAtMostNTasksAtOnce) {
  mp::Pool pool(2);
  std::vector<int> in(6, 150);
  auto spans = pool.map(timed_work, in, 1);
  for (const auto& s : spans) {
    int overlapping = 0;
    const std::int64_t t = std::get<1>(s) + 1;
    for (const auto& o : spans) overlapping += std::get<1>(o) <= t && t < std::get<2>(o);
    EXPECT_LE(overlapping, 2);
  }
}

TEST(Pool, MaxtasksperchildReplacesWorkerAfterThatManyTasks) {
  mp::Pool pool(mp::PoolOptions{.processes = 1, .maxtasksperchild = 2});
  std::vector<int> pids;
  std::vector<std::string> names;
  for (int i = 0; i < 6; ++i) {
    pids.push_back(pool.apply(my_pid));
    names.push_back(pool.apply(my_name));
  }
  // Each worker ran exactly two tasks (my_pid, then my_name) and was replaced.
  std::set<int> distinct(pids.begin(), pids.end());
  EXPECT_EQ(distinct.size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(names[i], "PoolWorker-" + std::to_string(i + 1));
}

TEST(Pool, InitializerRunsOnceInEachWorkerBeforeTasks) {
  MP_FORK_ONLY("the initializer is a closure");
  const int value = 7;
  mp::Pool pool(
      mp::PoolOptions{.processes = 2, .initializer = [value] { g_initialized += value; }});
  auto seen = pool.map([](int) { return g_initialized; }, std::vector<int>(20, 0), 1);
  for (int v : seen) EXPECT_EQ(v, 7);
  EXPECT_EQ(g_initialized, 0);  // not in the caller
}

TEST(Pool, InitializerThatThrowsBreaksThePool) {
  MP_FORK_ONLY("the initializer is a closure");
  mp::Pool pool(mp::PoolOptions{.processes = 2,
                                .initializer = [] { throw std::runtime_error("no database"); }});
  Stopwatch sw;
  try {
    pool.apply(square, 1);
    FAIL();
  } catch (const mp::BrokenPoolError& e) {
    EXPECT_NE(std::string(e.what()).find("no database"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("std::runtime_error"), std::string::npos) << e.what();
  }
  EXPECT_THROW(pool.apply(square, 1), mp::BrokenPoolError);
  EXPECT_THROW(pool.map(square, std::vector<int>{1, 2}), mp::BrokenPoolError);
  EXPECT_LT(sw.elapsed(), 3s);
  EXPECT_TRUE(mp::active_children().empty());  // no respawning
  pool.close();
  pool.join();
}

// ------------------------------------------------------------ worker death

TEST(PoolWorkerDeath, SigkilledWorkerFailsItsTaskWithWorkerLostError) {
  MP_FORK_ONLY("the task writes to an fd number the worker inherited");
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  mp::Pool pool(2);
  auto doomed = pool.apply_async(write_pid_then_sleep, fds[1], 10000);
  int pid = 0;
  ASSERT_EQ(::read(fds[0], &pid, sizeof pid), static_cast<ssize_t>(sizeof pid));
  auto others = pool.map_async(square, std::vector<int>{1, 2, 3, 4}, 1);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  Stopwatch sw;
  try {
    doomed.get();
    FAIL();
  } catch (const mp::WorkerLostError& e) {
    EXPECT_EQ(e.pid(), pid);
    EXPECT_EQ(e.signal(), SIGKILL);
    const std::string what = e.what();
    EXPECT_NE(what.find(std::to_string(pid)), std::string::npos) << what;
    EXPECT_NE(what.find("SIGKILL"), std::string::npos) << what;
  }
  EXPECT_LT(sw.elapsed(), 2s);
  EXPECT_EQ(others.get(), (std::vector<int>{1, 4, 9, 16}));
  // Replaced: still two workers, and the pool works.
  EXPECT_EQ(pool.apply(square, 5), 25);
  EXPECT_EQ(mp::active_children().size(), 2u);
  auto pids = pool.map([](int) { return ::getpid(); }, std::vector<int>(50, 0), 1);
  for (int p : pids) EXPECT_NE(p, pid);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(PoolWorkerDeath, WorkerThatExitsMidTaskFailsOnlyThatTask) {
  mp::Pool pool(1);
  auto lost = pool.apply_async([](int code) -> int { ::_exit(code); }, 3);
  auto after = pool.apply_async(square, 6);
  try {
    lost.get();
    FAIL();
  } catch (const mp::WorkerLostError& e) {
    EXPECT_EQ(e.exitcode(), 3);
  }
  EXPECT_EQ(after.get(), 36);
}

// ------------------------------------------------------------------ Ctrl-C

// Runs `body` in a child that leads its own process group (as a shell job
// does); the caller is a subreaper, so the child's workers come back to it.
pid_t spawn_group_leader(const std::function<void()>& body) {
  pid_t h = mp::fork();
  if (h == 0) {
    ::setpgid(0, 0);
    body();
    ::_exit(0);
  }
  ::setpgid(h, h);
  return h;
}

bool reap_within(pid_t pid, std::chrono::milliseconds limit, int* status) {
  Stopwatch sw;
  while (sw.elapsed() < limit) {
    pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid) return true;
    ::usleep(5000);
  }
  return false;
}

TEST(PoolCtrlC, SigintDuringMapEndsProgramAndItsWorkersSilently) {
  MP_FORK_ONLY("the task writes to an fd number the worker inherited");
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int info[2];
  int err[2];
  ASSERT_EQ(::pipe(info), 0);
  ASSERT_EQ(::pipe(err), 0);
  pid_t h = spawn_group_leader([&] {
    ::dup2(err[1], 2);
    mp::Pool pool(2);
    for (auto& c : mp::active_children()) {
      int p = c.pid();
      (void)!::write(info[1], &p, sizeof p);
    }
    pool.map(write_pid_then_sleep_all, std::vector<int>(4, info[1]), 1);
  });
  ::close(err[1]);
  std::vector<int> workers;
  for (int i = 0; i < 2; ++i) {
    int p;
    ASSERT_EQ(::read(info[0], &p, sizeof p), static_cast<ssize_t>(sizeof p));
    workers.push_back(p);
  }
  for (int i = 0; i < 2; ++i) {  // both workers are inside a task
    int p;
    ASSERT_EQ(::read(info[0], &p, sizeof p), static_cast<ssize_t>(sizeof p));
  }
  ASSERT_EQ(::kill(-h, SIGINT), 0);
  int status = 0;
  ASSERT_TRUE(reap_within(h, 5s, &status));
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT);
  for (int w : workers) {
    int ws = 0;
    EXPECT_TRUE(reap_within(w, 5s, &ws)) << "worker " << w << " left behind";
  }
  std::string text;
  char buf[256];
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) text.append(buf, n);
  EXPECT_EQ(text, "");
  ::close(err[0]);
  ::close(info[0]);
  ::close(info[1]);
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
}

TEST(PoolCtrlC, HandledSigintFailsMapWithWorkerLostErrorAndLeavesNoProcess) {
  MP_FORK_ONLY("the task writes to an fd number the worker inherited");
  int info[2];
  int err[2];
  int result[2];
  ASSERT_EQ(::pipe(info), 0);
  ASSERT_EQ(::pipe(err), 0);
  ASSERT_EQ(::pipe(result), 0);
  pid_t h = spawn_group_leader([&] {
    ::dup2(err[1], 2);
    ::signal(SIGINT, [](int) { g_sigint = 1; });
    std::string outcome;
    {
      mp::Pool pool(2);
      try {
        pool.map(write_pid_then_sleep_all, std::vector<int>(2, info[1]), 1);
        outcome = "no error";
      } catch (const mp::WorkerLostError& e) {
        outcome = e.what();
      } catch (const std::exception& e) {
        outcome = std::string("other error: ") + e.what();
      }
    }
    outcome += mp::active_children().empty() ? "|clean" : "|children left";
    outcome += g_sigint ? "|handled" : "|not handled";
    (void)!::write(result[1], outcome.data(), outcome.size());
  });
  ::close(err[1]);
  ::close(result[1]);
  for (int i = 0; i < 2; ++i) {  // both workers are inside a task
    int p;
    ASSERT_EQ(::read(info[0], &p, sizeof p), static_cast<ssize_t>(sizeof p));
  }
  ASSERT_EQ(::kill(-h, SIGINT), 0);
  int status = 0;
  ASSERT_TRUE(reap_within(h, 10s, &status));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::string text;
  char buf[512];
  for (ssize_t n; (n = ::read(result[0], buf, sizeof buf)) > 0;) text.append(buf, n);
  EXPECT_NE(text.find("SIGINT"), std::string::npos) << text;
  EXPECT_NE(text.find("|clean|handled"), std::string::npos) << text;
  std::string errors;
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) errors.append(buf, n);
  EXPECT_EQ(errors, "");
  ::close(err[0]);
  ::close(result[0]);
  ::close(info[0]);
  ::close(info[1]);
}

TEST(PoolWorkerDeath, IdleWorkersExitWhenThePoolProcessIsKilled) {
  MP_FORK_ONLY("runs a pool in a fork of the test (spawn_group_leader)");
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int info[2];
  ASSERT_EQ(::pipe(info), 0);
  pid_t h = spawn_group_leader([&] {
    mp::Pool pool(2);
    for (auto& c : mp::active_children()) {
      int p = c.pid();
      (void)!::write(info[1], &p, sizeof p);
    }
    ::pause();
  });
  std::vector<int> workers;
  for (int i = 0; i < 2; ++i) {
    int p;
    ASSERT_EQ(::read(info[0], &p, sizeof p), static_cast<ssize_t>(sizeof p));
    workers.push_back(p);
  }
  ASSERT_EQ(::kill(h, SIGKILL), 0);
  int status = 0;
  ASSERT_TRUE(reap_within(h, 5s, &status));
  for (int w : workers) {
    int ws = 0;
    EXPECT_TRUE(reap_within(w, 3s, &ws)) << "worker " << w << " outlived its pool";
  }
  ::close(info[0]);
  ::close(info[1]);
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
}

}  // namespace

namespace {
int exit_now(int) { ::_exit(9); }
void init_exits() { ::_exit(3); }
void init_crashes() { ::raise(SIGSEGV); }
}  // namespace

// Issue 15, item 4: an initializer that exits or crashes (rather than
// throwing) breaks the pool after a few starts, as a throwing one does,
// instead of replacing workers forever while get() waits.
TEST(PoolBroken, InitializerThatExitsOrCrashesBreaksThePool) {
  for (void (*init)() : {init_exits, init_crashes}) {
    mp::PoolOptions o;
    o.processes = 2;
    o.initializer = init;  // plain functions: the test runs under every start method
    mp::Pool pool(o);
    mp_test::Stopwatch sw;
    try {
      pool.apply(square, 2);
      FAIL() << "no error";
    } catch (const mp::BrokenPoolError& e) {
      EXPECT_NE(std::string(e.what()).find("before their initializer returned"), std::string::npos)
          << e.what();
    }
    EXPECT_LT(sw.elapsed(), std::chrono::seconds(10));
    EXPECT_THROW(pool.apply(square, 3), mp::BrokenPoolError);
  }
}

// Issue 15, item 3: a pool whose replacement workers cannot be started
// (fork fails, as under RLIMIT_NPROC) fails the waiting tasks with an mp
// error that says why, keeps retrying, works again once a start succeeds,
// and join() returns.
TEST(PoolBroken, ReplacementThatCannotStartFailsWaitingTasksAndRecovers) {
  mp::Pool pool(1);
  EXPECT_EQ(pool.apply(square, 3), 9);
  mp::internal::pool::inject_spawn_failures(4);
  auto lost = pool.apply_async(exit_now, 0);
  std::vector<mp::AsyncResult<int>> waiting;
  for (int i = 0; i < 5; ++i) waiting.push_back(pool.apply_async(square, i));
  EXPECT_THROW(lost.get(std::chrono::seconds(10)), mp::WorkerLostError);
  for (auto& r : waiting) {
    try {
      r.get(std::chrono::seconds(10));
      ADD_FAILURE() << "a task ran with no worker";
    } catch (const mp::ProcessError& e) {
      EXPECT_NE(std::string(e.what()).find("could not start a worker"), std::string::npos)
          << e.what();
    }
  }
  // The injected failures run out (retries back off 10, 20, 40... ms): the
  // pool starts a worker again, and tasks run.
  mp_test::Stopwatch retry;
  int result = -1;
  while (result < 0 && retry.elapsed() < std::chrono::seconds(20)) {
    try {
      result = pool.apply_async(square, 7).get(std::chrono::seconds(10));
    } catch (const mp::ProcessError& e) {
      EXPECT_NE(std::string(e.what()).find("could not start a worker"), std::string::npos)
          << e.what();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  EXPECT_EQ(result, 49);
  pool.close();
  mp_test::Stopwatch sw;
  pool.join();
  EXPECT_LT(sw.elapsed(), std::chrono::seconds(10));
}

// Issue 15, item 6: a Pool built while no fd is free fails in its
// constructor with the OS's reason, instead of a pool whose every wait
// raises later; with fds free again, a pool works.
TEST(PoolBroken, PoolBuiltWithNoFdFreeFailsInTheConstructor) {
  MP_FORK_ONLY("runs in a fork of the test, which lowers its own fd limit");
  pid_t pid = mp::fork();
  if (pid == 0) {
    struct rlimit rl {};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 64;
    ::setrlimit(RLIMIT_NOFILE, &rl);
    std::vector<int> held;
    for (int fd; (fd = ::open("/dev/null", O_RDONLY)) >= 0;) held.push_back(fd);
    int code = 1;
    try {
      mp::Pool pool(2);
      code = 2;  // built: must not happen with no fd free
    } catch (const std::system_error& e) {
      code = e.code().value() == EMFILE ? 0 : 3;
    } catch (...) {
      code = 4;
    }
    for (int fd : held) ::close(fd);
    if (code == 0) {
      mp::Pool pool(2);
      code = pool.apply(square, 5) == 25 ? 0 : 5;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}
