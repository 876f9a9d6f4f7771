// The conformance suites' main(): GoogleTest's, behind the entry point that
// the spawn and forkserver start methods need (mp/context.h): a child started
// by them re-executes this binary, and mp::freeze_support() runs its task
// there (or the forkserver's loop) instead of the tests.
//
// --start_method=NAME makes NAME the default start method for the whole run
// (the suites that run once per method: conformance/defs.bzl). A test that
// holds only under fork (a closure, memory as of start) calls
// mp_test::fork_only() first, which skips it under another default.
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "mp/context.h"

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
