// The conformance suites' main(): GoogleTest's, plus the entry point that the
// spawn and forkserver start methods need (mp/context.h): a child started by
// them re-executes this binary, and mp::freeze_support() runs its task there
// instead of the tests.
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
