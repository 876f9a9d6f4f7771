// The conformance suites' main(): GoogleTest's, behind the entry point that
// the spawn and forkserver start methods need (mp/context.h): a child started
// by them re-executes this binary, and mp::freeze_support() runs its task
// there (or the forkserver's loop) instead of the tests.
#include <gtest/gtest.h>

#include "mp/context.h"

int main(int argc, char** argv) {
  mp::freeze_support();
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
