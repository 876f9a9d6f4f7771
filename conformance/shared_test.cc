// Conformance: mp/shared.h.
// CPython docs: multiprocessing — "Shared ctypes Objects" (Value, Array,
// RawValue, RawArray, get_lock(), get_obj()), "Sharing state between
// processes", and multiprocessing.shared_memory — "SharedMemory" (create
// with a size, attach by name, close(), unlink(), the errors for a bad size,
// a missing name and an existing name). Plus mp's promise that no /dev/shm
// entry is left behind and that only the creator unlinks by default.
//
// Children run targets that travel (functions taking Value and Array by
// value, a SharedMemory by reference through std::ref), so the suite runs
// under each start method (conformance/defs.bzl).
#include "mp/shared.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <list>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "conformance/test_util.h"
#include "mp/os.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using mp_test::joined_exitcode;
using mp_test::require;
using mp_test::run_worker;
using mp_test::start_child;
using mp_test::wait_exit_code;

// --- the posix_spawn'ed helper ---------------------------------------------
// When this binary is started with MP_SHM_ATTACH_CHILD=<name> in its
// environment it attaches to that segment, checks the parent's pattern, adds
// its own and exits before GoogleTest runs.
struct SpawnedChild {
  SpawnedChild() {
    const char* name = std::getenv("MP_SHM_ATTACH_CHILD");
    if (!name) return;
    int rc = 0;
    try {
      auto shm = mp::SharedMemory::attach(name);
      auto buf = shm.buf();
      if (buf.size() < 8192) rc = 2;
      for (std::size_t i = 0; rc == 0 && i < 4096; ++i) {
        if (buf[i] != std::byte(i % 251)) rc = 3;
      }
      for (std::size_t i = 4096; rc == 0 && i < 8192; ++i) buf[i] = std::byte(i % 13);
      // Attached, not created: destroying `shm` must not unlink the name.
    } catch (const mp::FileNotFoundError&) {
      rc = 4;
    } catch (...) {
      rc = 5;
    }
    _exit(rc);
  }
} spawned_child;

bool shm_exists(const std::string& name) { return std::filesystem::exists("/dev/shm/" + name); }

// Threads and Processes: one typed test runs against both worker kinds.
// run_all(n, body, args...) runs body(args...) in n workers at once and
// expects each to return; a Processes worker is a child of the run's start
// method.
struct Threads {
  template <class F, class... Args>
  static void run_all(int n, F body, const Args&... args) {
    std::vector<std::thread> ts;
    std::vector<int> rcs(n, -1);
    for (int i = 0; i < n; ++i) {
      ts.emplace_back([&, i] {
        rcs[i] = run_worker([&] {
          body(args...);
          return 0;
        });
      });
    }
    for (auto& t : ts) t.join();
    for (int rc : rcs) EXPECT_EQ(rc, 0);
  }
};
struct Processes {
  template <class F, class... Args>
  static void run_all(int n, F body, const Args&... args) {
    std::vector<mp::Process> children;
    for (int i = 0; i < n; ++i) children.push_back(start_child(body, args...));
    for (auto& p : children) EXPECT_EQ(joined_exitcode(p), 0);
  }
};
template <class W>
class SharedAcrossWorkers : public ::testing::Test {};
class WorkerKindNames {
 public:
  template <class T>
  static std::string GetName(int) {
    return std::is_same_v<T, Threads> ? "Threads" : "Processes";
  }
};
using WorkerKinds = ::testing::Types<Threads, Processes>;
TYPED_TEST_SUITE(SharedAcrossWorkers, WorkerKinds, WorkerKindNames);

template <class T>
concept HasGetLock = requires(T& t) {
  t.get_lock();
};

// ------------------------------------------------------------- targets
// Workers' bodies, shared by threads and children of every start method.

void increment_under_get_lock(mp::Value<int> counter) {
  for (int i = 0; i < 20000; ++i) {
    std::lock_guard<mp::RLock> g(counter.get_lock());
    counter.get_obj() += 1;
  }
}

void add_two_by_update(mp::Value<long> counter) {
  for (int i = 0; i < 5000; ++i) counter.update([](long& x) { x += 2; });
}

struct Point {
  double x, y;
};

void store_point(mp::Value<Point> p, Point to) { p.store(to); }

void expect_lock_busy(mp::Value<int, mp::Lock> v) {
  require(!v.get_lock().acquire(100ms), "acquired a lock the parent holds");
}

void fill_squares_under_lock(mp::Array<int> a) {
  std::lock_guard<mp::RLock> g(a.get_lock());
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<int>(i * i);
}

// write_then_destroy marks byte 0 of the segment and destroys the handle
// it was given, in the child.
void write_then_destroy(mp::SharedMemory& shm) {
  shm.buf()[0] = std::byte{1};
  { auto moved = std::move(shm); }
}

// die_holding_lock takes the lock of a Value or an Array and dies.
template <class Shared>
void die_holding_lock(Shared shared) {
  shared.get_lock().acquire();
  ::raise(SIGKILL);
}

void die_inside_update(mp::Value<int> v) {
  v.update([](int& x) {
    x = 5;
    ::raise(SIGKILL);  // dies inside the update, holding the lock
  });
}

void store_value(mp::Value<int> v, int x) { v.store(x); }

// ==================================================================== Value

TYPED_TEST(SharedAcrossWorkers, FourWorkersTimesTwentyThousandIncrementsEndAt80000) {
  mp::Value<int> counter(0);
  TypeParam::run_all(4, increment_under_get_lock, counter);
  EXPECT_EQ(counter.load(), 80000);
}

TYPED_TEST(SharedAcrossWorkers, UpdateIsAtomicUnderTheValuesLock) {
  mp::Value<long> counter(0);
  TypeParam::run_all(3, add_two_by_update, counter);
  EXPECT_EQ(counter.load(), 30000);
}

TEST(Value, StoreInChildIsSeenByParent) {
  mp::Value<Point> p(Point{1.5, 2.5});
  EXPECT_EQ(p.load().x, 1.5);
  mp::Process child = start_child(store_point, p, Point{3.0, 4.0});
  EXPECT_EQ(joined_exitcode(child), 0);
  EXPECT_EQ(p.load().x, 3.0);
  EXPECT_EQ(p.load().y, 4.0);
}

TEST(Value, DefaultLockIsAnRLock) {
  mp::Value<int> v(7);
  static_assert(std::is_same_v<decltype(v.get_lock()), mp::RLock&>);
  std::lock_guard<mp::RLock> g(v.get_lock());
  EXPECT_EQ(v.load(), 7);  // re-enters the RLock the caller holds
  v.store(8);
  EXPECT_EQ(v.update([](int& x) { x *= 2; }), 16);
}

TEST(Value, GivenLockIsTheOneUsed) {
  mp::Lock shared;
  mp::Value<int, mp::Lock> a(1, shared), b(2, shared);
  shared.acquire();
  EXPECT_TRUE(a.get_lock().locked());
  EXPECT_FALSE(b.get_lock().acquire(false));
  // The child is blocked by the parent's hold on the shared lock.
  mp::Process child = start_child(expect_lock_busy, a);
  EXPECT_EQ(joined_exitcode(child), 0);
  shared.release();
  EXPECT_EQ(a.load() + b.load(), 3);
  mp::Value deduced(3, shared);
  static_assert(std::is_same_v<decltype(deduced), mp::Value<int, mp::Lock>>);
  mp::Value raw(3, mp::NoLock{});
  static_assert(std::is_same_v<decltype(raw), mp::RawValue<int>>);
}

TEST(Value, RawValueHasNoLock) {
  mp::RawValue<int> v(5);
  static_assert(!HasGetLock<decltype(v)>);
  EXPECT_EQ(v.load(), 5);
  v.store(6);
  EXPECT_EQ(v.get_obj(), 6);
}

TEST(Value, CopiesReferToTheSameSharedValue) {
  mp::Value<int> a(1);
  mp::Value<int> b = a;
  b.store(42);
  EXPECT_EQ(a.load(), 42);
}

// ==================================================================== Array

TEST(Array, IsZeroFilled) {
  mp::Array<int> a(1000);
  EXPECT_EQ(a.size(), 1000u);
  EXPECT_EQ(std::accumulate(a.begin(), a.end(), 0), 0);
}

TEST(Array, FromARangeCopiesItsElements) {
  std::vector<double> src{1.0, 2.0, 3.0};
  mp::Array<double> a(src);
  EXPECT_EQ(a.to_vector(), src);
  mp::Array<int> b({4, 5, 6, 7});
  EXPECT_EQ(b.size(), 4u);
  EXPECT_EQ(b[3], 7);
  std::list<int> not_random_access{9, 8};
  mp::Array<int> c(not_random_access);
  EXPECT_EQ(c.at(1), 8);
  mp::Array<int> d(std::views::iota(0, 5));
  EXPECT_EQ(d.at(4), 4);
  mp::Array deduced(src);
  static_assert(std::is_same_v<decltype(deduced), mp::Array<double>>);
  EXPECT_EQ(deduced[2], 3.0);
}

TEST(Array, AtOutOfRangeRaisesIndexError) {
  mp::Array<int> a(3);
  EXPECT_NO_THROW(a.at(2));
  try {
    a.at(3);
    FAIL() << "no exception";
  } catch (const mp::IndexError& e) {
    EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos);
  }
}

TEST(Array, IsIterableAndConvertsToASpan) {
  mp::Array<int> a({1, 2, 3});
  int sum = 0;
  for (int& x : a) sum += x;
  EXPECT_EQ(sum, 6);
  std::span<int> s = a;
  s[0] = 10;
  EXPECT_EQ(a[0], 10);
  EXPECT_EQ(a.span().size(), 3u);
}

TEST(Array, ChildWritesAreSeenByParentUnderItsLock) {
  mp::Array<int> a(4);
  static_assert(std::is_same_v<decltype(a.get_lock()), mp::RLock&>);
  mp::Process child = start_child(fill_squares_under_lock, a);
  EXPECT_EQ(joined_exitcode(child), 0);
  EXPECT_EQ(a.to_vector(), (std::vector<int>{0, 1, 4, 9}));
}

TEST(Array, RawArrayHasNoLockAndGivenLockIsShared) {
  mp::RawArray<char> raw(8);
  static_assert(!HasGetLock<decltype(raw)>);
  mp::Lock lock;
  mp::Array<int, mp::Lock> locked(2, lock);
  lock.acquire();
  EXPECT_FALSE(locked.get_lock().acquire(false));
  lock.release();
}

// ============================================================= SharedMemory

TEST(SharedMemory, CreateWithZeroOrNegativeSizeRaisesValueError) {
  try {
    mp::SharedMemory::create(0);
    FAIL() << "no exception";
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "'size' must be a positive number different from zero");
  }
  EXPECT_THROW(mp::SharedMemory::create(-5), mp::ValueError);
  EXPECT_THROW(mp::SharedMemory(std::nullopt, false), mp::ValueError);
}

TEST(SharedMemory, AttachToAMissingNameRaisesFileNotFoundError) {
  EXPECT_THROW(mp::SharedMemory::attach("mp_test_surely_missing_segment"), mp::FileNotFoundError);
}

TEST(SharedMemory, CreateWithAnExistingNameRaisesFileExistsError) {
  auto first = mp::SharedMemory::create(64);
  EXPECT_THROW(mp::SharedMemory::create(first.name(), 64), mp::FileExistsError);
  // The failed create must not have removed the existing segment.
  EXPECT_TRUE(shm_exists(first.name()));
}

TEST(SharedMemory, AutoNamesAreUniqueAndAttachable) {
  auto a = mp::SharedMemory::create(100);
  auto b = mp::SharedMemory::create(100);
  EXPECT_NE(a.name(), b.name());
  EXPECT_EQ(a.name().find('/'), std::string::npos);
  EXPECT_EQ(a.size(), 100u);
  a.buf()[99] = std::byte{7};
  auto again = mp::SharedMemory::attach(a.name());
  EXPECT_EQ(again.size(), 100u);
  EXPECT_EQ(again.buf()[99], std::byte{7});
  auto with_slash = mp::SharedMemory::attach("/" + a.name());
  EXPECT_EQ(with_slash.buf()[99], std::byte{7});
}

TEST(SharedMemory, AttachByNameFromAPosixSpawnedProcess) {
  auto shm = mp::SharedMemory::create(8192);
  auto buf = shm.buf();
  for (std::size_t i = 0; i < 4096; ++i) buf[i] = std::byte(i % 251);

  std::string env_entry = "MP_SHM_ATTACH_CHILD=" + shm.name();
  std::vector<char*> envp{env_entry.data(), nullptr};
  char arg0[] = "shared_test_child";
  char* argv[] = {arg0, nullptr};
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()), 0);
  EXPECT_EQ(wait_exit_code(pid), 0);
  for (std::size_t i = 4096; i < 8192; ++i) {
    ASSERT_EQ(buf[i], std::byte(i % 13)) << "byte " << i;
  }
  EXPECT_TRUE(shm_exists(shm.name()));  // the attacher did not unlink
}

TEST(SharedMemory, CreatorUnlinksOnDestructionSoNothingLeaks) {
  std::string name;
  {
    auto shm = mp::SharedMemory::create(4096);
    name = shm.name();
    EXPECT_TRUE(shm_exists(name));
  }
  EXPECT_FALSE(shm_exists(name));
  EXPECT_THROW(mp::SharedMemory::attach(name), mp::FileNotFoundError);
}

TEST(SharedMemory, AttacherDoesNotUnlinkByDefault) {
  auto shm = mp::SharedMemory::create(128);
  { auto other = mp::SharedMemory::attach(shm.name()); }
  EXPECT_TRUE(shm_exists(shm.name()));
}

// Under fork the child's handle is a copy of the creating one (only the
// creating process unlinks); under spawn and forkserver an attached one.
TEST(SharedMemory, ChildsHandleDestroyedInTheChildDoesNotUnlink) {
  auto shm = mp::SharedMemory::create(128);
  mp::Process child = start_child(write_then_destroy, std::ref(shm));
  EXPECT_EQ(joined_exitcode(child), 0);
  EXPECT_TRUE(shm_exists(shm.name()));
  EXPECT_EQ(shm.buf()[0], std::byte{1});
}

TEST(SharedMemory, CloseUnmapsButKeepsTheSegment) {
  auto shm = mp::SharedMemory::create(64);
  shm.buf()[0] = std::byte{9};
  shm.close();
  shm.close();  // idempotent
  EXPECT_THROW(shm.buf(), mp::ValueError);
  auto other = mp::SharedMemory::attach(shm.name());
  EXPECT_EQ(other.buf()[0], std::byte{9});
}

TEST(SharedMemory, UnlinkRemovesTheNameAndASecondUnlinkRaises) {
  auto shm = mp::SharedMemory::create(64);
  auto view = mp::SharedMemory::attach(shm.name());
  shm.unlink();
  EXPECT_FALSE(shm_exists(shm.name()));
  EXPECT_THROW(mp::SharedMemory::attach(shm.name()), mp::FileNotFoundError);
  view.buf()[0] = std::byte{3};  // existing mappings stay valid
  EXPECT_EQ(shm.buf()[0], std::byte{3});
  EXPECT_THROW(view.unlink(), mp::FileNotFoundError);
}

TEST(SharedMemory, HandingTheNameOverKeepsItAlive) {
  std::string name;
  {
    auto shm = mp::SharedMemory::create(64);
    name = shm.name();
    shm.set_unlink_on_destroy(false);
  }
  EXPECT_TRUE(shm_exists(name));
  auto adopt = mp::SharedMemory::attach(name);
  adopt.set_unlink_on_destroy(true);
  adopt.close();
  adopt = mp::SharedMemory::create(32);  // move-assign destroys the old handle
  EXPECT_FALSE(shm_exists(name));
}

TEST(SharedMemory, NoSegmentOfThisProcessIsLeftBehind) {
  {
    auto a = mp::SharedMemory::create(10);
    auto b = mp::SharedMemory::create(20);
    auto c = std::move(a);
  }
  const std::string prefix = fmt::format("mp_{}_", mp::getpid());
  int left = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    if (entry.path().filename().string().starts_with(prefix)) ++left;
  }
  EXPECT_EQ(left, 0);
}

}  // namespace

// A copy of an Array (even of a non-const one, which is also a range) is a
// handle to the same shared elements, as a copy of a Value is: it must not
// pick the range constructor and make a new array.
TEST(Array, CopyOfANonConstArraySharesItsElements) {
  mp::Array<int> a(4);
  mp::Array<int> b(a);
  b[2] = 42;
  EXPECT_EQ(a[2], 42);
  EXPECT_EQ(a.data(), b.data());
}

// Creating reserves the pages (issue 15, item 7): a segment larger than
// /dev/shm's free space fails in create() with ENOSPC and leaves no name,
// instead of succeeding and killing the first write with SIGBUS.
TEST(SharedMemory, CreateLargerThanDevShmFreeSpaceRaisesEnospcAndLeavesNoName) {
  struct statvfs vfs {};
  ASSERT_EQ(::statvfs("/dev/shm", &vfs), 0);
  const auto free_bytes = static_cast<std::ptrdiff_t>(vfs.f_bavail * vfs.f_frsize);
  const std::string name = "mp_test_enospc_" + std::to_string(::getpid());
  try {
    mp::SharedMemory::create(name, free_bytes + (std::ptrdiff_t{64} << 20));
    FAIL() << "create succeeded beyond the free space";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ENOSPC) << e.what();
  }
  EXPECT_THROW(mp::SharedMemory::attach(name), mp::FileNotFoundError);
}

// A holder of a Value's or Array's lock that dies (issue 15, item 1): the
// next guarded call reports it once with OwnerDeadError and leaves the lock
// free, so nothing hangs afterwards, in this process or another.
TEST(Value, LockHolderDeathIsReportedOnceAndTheLockIsFreeAfter) {
  mp::Value<int, mp::Lock> v(1);
  mp::Process holder = start_child(die_holding_lock<mp::Value<int, mp::Lock>>, v);
  ASSERT_EQ(joined_exitcode(holder), -SIGKILL);
  EXPECT_THROW(v.store(2), mp::OwnerDeadError);
  v.store(3);  // returns: the lock is free
  EXPECT_EQ(v.load(), 3);
  EXPECT_FALSE(v.get_lock().locked());
}

TEST(Value, RLockHolderDeathLeavesTheLockFreeForOtherProcesses) {
  mp::Value<int> v(1);  // RLock by default
  mp::Process holder = start_child(die_inside_update, v);
  holder.join();
  EXPECT_THROW(v.load(), mp::OwnerDeadError);
  mp::Process writer = start_child(store_value, v, 4);
  writer.join(std::chrono::seconds(10));
  EXPECT_EQ(writer.exitcode(), 0);  // not blocked by a survivor owning the lock
  EXPECT_EQ(v.load(), 4);
}

TEST(Array, LockHolderDeathIsReportedOnceAndToVectorWorksAfter) {
  mp::Array<int> a(std::vector<int>{1, 2, 3});
  mp::Process holder = start_child(die_holding_lock<mp::Array<int>>, a);
  holder.join();
  EXPECT_THROW(a.to_vector(), mp::OwnerDeadError);
  EXPECT_EQ(a.to_vector(), (std::vector<int>{1, 2, 3}));
}

// Every name /dev/shm cannot hold raises one ValueError saying why (issue 15,
// item 9): no silent truncation at a NUL, no std::system_error.
TEST(SharedMemory, InvalidNamesRaiseValueErrorSayingWhy) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string("ab\0cd", 5), "NUL"}, {".", "directories"}, {"..", "directories"},
      {std::string(300, 'x'), "255"},    {"a/b", "'/'"},       {"", "empty"}};
  for (const auto& [name, why] : cases) {
    for (bool create : {true, false}) {
      try {
        mp::SharedMemory m(name, create, 64);
        ADD_FAILURE() << "accepted a bad name (create=" << create << ")";
      } catch (const mp::ValueError& e) {
        EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
      }
    }
  }
}
