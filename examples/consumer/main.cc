// A program that uses mp from outside mp's tree: Process, Queue and Pool.
// Built four ways by tools/ci_consumers.sh, exactly as README's "Use mp in
// your project" says: CMake find_package (CMakeLists.txt), CMake
// add_subdirectory (vendored/), pkg-config (Makefile) and a Bazel workspace
// (WORKSPACE, BUILD). Each build must print expected_output.txt.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <string>
#include <vector>

#include "mp/pool.h"
#include "mp/process.h"
#include "mp/queue.h"

namespace {

// A pool task is a plain function: it crosses to the workers as data.
int square(int x) { return x * x; }

}  // namespace

int main() {
  mp::Queue<std::string> queue;  // created before the process starts
  mp::Process producer([&queue] { queue.put("hello from a child process"); });
  producer.start();
  fmt::print("{}\n", queue.get());
  producer.join();
  fmt::print("producer exitcode: {}\n", *producer.exitcode());

  mp::Pool pool(2);
  std::vector<int> squares = pool.map(square, std::vector{1, 2, 3, 4});
  fmt::print("squares: {}\n", fmt::join(squares, " "));
  fmt::print("apply_async: {}\n", pool.apply_async(square, 12).get());
  pool.close();
  pool.join();
}
