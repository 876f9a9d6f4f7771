// The conformance suites' main(): GoogleTest's, behind the entry point that
// the spawn and forkserver start methods need (mp/context.h): a child started
// by them re-executes this binary, and mp::freeze_support() runs its task
// there (or the forkserver's loop) instead of the tests.
//
// --start_method=NAME makes NAME the default start method for the whole run
// (the suites that run once per method: conformance/defs.bzl). A test that
// holds only under fork (a closure, memory as of start) calls
// MP_FORK_ONLY(why) first (test_util.h), which skips it under another default.
#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "mp/context.h"
#include "mp/internal/start.h"
#include "mp/process.h"

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer (bazel test --config=tsan): the by-design patterns it
// reports in mp, each named as precisely as its matching allows.
//  * The Queue's consumers read a record header (read8) and copy a record
//    out speculatively, before a compare-and-swap on the consumer word says
//    whether the bytes were theirs (shm_channel.cc, lock-free gets); a
//    producer may be writing that slot meanwhile, and then the CAS fails and
//    the copy is thrown away. Plain loads, by design, on the hot path.
//    When TSan cannot restore the reader's stack it reports the producer's
//    side alone, top frame send_parts: its only plain stores to shared
//    memory are those ring bytes (every control word is a std::atomic,
//    which TSan checks on its own), so that side is suppressed too.
//  * mp's end-of-process duty joins non-daemon mp::Threads through their
//    state (CPython's threading._shutdown) and leaves the pthreads to the
//    exit: a death test that exits then reads as a thread leak.
//  * A forked child re-arms in place the thread registry's mutex, which
//    another thread of the parent may have held at the fork; TSan does not
//    see the re-initialisation and reports a double lock. (The two tests
//    that fork while threads run skip themselves under TSan.)
extern "C" const char* __tsan_default_suppressions() {
  return "race_top:read8\n"
         "race_top:mp::internal::ShmChannel::send_parts\n"
         "race:append_to\n"
         "race:take_whole\n"
         "thread:mp::Thread::start\n"
         "mutex:lib/mp/threading.cc\n";
}
#endif

namespace {

// fd_targets: this process's open fds and what each refers to.
std::map<int, std::string> fd_targets() {
  std::map<int, std::string> out;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return out;
  const int own = dirfd(d);
  while (const dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const int fd = std::atoi(e->d_name);
    if (fd == own) continue;
    char buf[256] = {};
    const ssize_t n = readlinkat(own, e->d_name, buf, sizeof buf - 1);
    out[fd] = n > 0 ? std::string(buf, n) : "?";
  }
  closedir(d);
  return out;
}

// Stat is what /proc/<pid>/stat says of a process: its state and parent.
struct Stat {
  char state = '?';
  pid_t ppid = 0;
};

std::map<pid_t, Stat> all_processes() {
  std::map<pid_t, Stat> out;
  DIR* d = opendir("/proc");
  if (d == nullptr) return out;
  while (const dirent* e = readdir(d)) {
    const pid_t pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream f("/proc/" + std::string(e->d_name) + "/stat");
    std::string line;
    if (!std::getline(f, line)) continue;
    const auto close = line.rfind(')');  // the name may hold spaces and parentheses
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    Stat st;
    rest >> st.state >> st.ppid;
    out[pid] = st;
  }
  closedir(d);
  return out;
}

// NothingLeft checks, once every test of the suite has run, what issue 14
// asks of every suite under every start method: no zombie among this
// process's descendants (forkserver children included), no /dev/shm entry
// this process named (mp_<pid>_...), and no fd opened during the run that
// is still open, but those mp keeps for the life of the process
// (internal::kept_fds()).
class NothingLeft : public testing::Environment {
 public:
  void SetUp() override { fds_ = fd_targets(); }

  void TearDown() override {
    (void)mp::active_children();  // reaps what has ended, as CPython's _cleanup
    std::string problems;
    for (int tries = 0;; ++tries) {
      problems = zombies();
      if (problems.empty() || tries == 50) break;
      usleep(100 * 1000);  // a server reaps its children asynchronously
      (void)mp::active_children();
    }
    problems += shm_entries();
    const std::vector<int> kept = mp::internal::kept_fds();
    for (const auto& [fd, target] : fd_targets()) {
      const auto was = fds_.find(fd);
      if (was != fds_.end() && was->second == target) continue;
      if (std::find(kept.begin(), kept.end(), fd) != kept.end()) continue;
      problems += "fd " + std::to_string(fd) + " -> " + target + " still open\n";
    }
    EXPECT_EQ(problems, "") << "left behind after the suite (start method "
                            << mp::get_start_method() << ")";
  }

 private:
  static std::string zombies() {
    const auto procs = all_processes();
    std::set<pid_t> mine{getpid()};
    for (bool grew = true; grew;) {
      grew = false;
      for (const auto& [pid, st] : procs) {
        if (mine.count(st.ppid) && mine.insert(pid).second) grew = true;
      }
    }
    std::string out;
    for (const pid_t pid : mine) {
      const auto it = procs.find(pid);
      if (pid != getpid() && it != procs.end() && it->second.state == 'Z') {
        out += "zombie " + std::to_string(pid) + " (child of " + std::to_string(it->second.ppid) +
               ")\n";
      }
    }
    return out;
  }

  static std::string shm_entries() {
    const std::string prefix = "mp_" + std::to_string(getpid()) + "_";
    std::string out;
    DIR* d = opendir("/dev/shm");
    if (d == nullptr) return out;
    while (const dirent* e = readdir(d)) {
      if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0) {
        out += std::string("/dev/shm/") + e->d_name + " left\n";
      }
    }
    closedir(d);
    return out;
  }

  std::map<int, std::string> fds_;
};

}  // namespace

int main(int argc, char** argv) {
  mp::freeze_support();
  testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--start_method=", 15) == 0) {
      mp::set_start_method(argv[i] + 15, true);
    }
  }
  testing::AddGlobalTestEnvironment(new NothingLeft);
  return RUN_ALL_TESTS();
}
