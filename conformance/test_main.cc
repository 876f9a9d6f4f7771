// The conformance suites' main(): GoogleTest's, behind the entry point that
// the spawn and forkserver start methods need (mp/context.h): a child started
// by them re-executes this binary, and mp::freeze_support() runs its task
// there (or the forkserver's loop) instead of the tests.
//
// --start_method=NAME makes NAME the default start method for the whole run
// (the suites that run once per method: conformance/defs.bzl). A test that
// holds only under fork (a closure, memory as of start) calls
// MP_FORK_ONLY(why) first (test_util.h), which skips it under another default.
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "mp/context.h"

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer (bazel test --config=tsan): the by-design patterns it
// reports in mp, each named as precisely as its matching allows.
//  * The Queue's consumers read a record header (read8) and copy a record
//    out speculatively, before a compare-and-swap on the consumer word says
//    whether the bytes were theirs (shm_channel.cc, lock-free gets); a
//    producer may be writing that slot meanwhile, and then the CAS fails and
//    the copy is thrown away. Plain loads, by design, on the hot path.
//  * mp's end-of-process duty joins non-daemon mp::Threads through their
//    state (CPython's threading._shutdown) and leaves the pthreads to the
//    exit: a death test that exits then reads as a thread leak.
//  * A forked child re-arms in place the thread registry's mutex, which
//    another thread of the parent may have held at the fork; TSan does not
//    see the re-initialisation and reports a double lock. (The two tests
//    that fork while threads run skip themselves under TSan.)
extern "C" const char* __tsan_default_suppressions() {
  return "race_top:read8\n"
         "race:append_to\n"
         "race:take_whole\n"
         "thread:mp::Thread::start\n"
         "mutex:lib/mp/threading.cc\n";
}
#endif

int main(int argc, char** argv) {
  mp::freeze_support();
  testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--start_method=", 15) == 0) {
      mp::set_start_method(argv[i] + 15, true);
    }
  }
  return RUN_ALL_TESTS();
}
