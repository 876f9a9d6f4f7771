// Tutorial: four processes add to one shared counter; its lock keeps every
// increment, so the total is exact. Then the same with a shared Array.
//   bazel run //examples:shared_counter
//
// CPython:
//   counter = multiprocessing.Value('i', 0)
//   def work(counter):
//       for _ in range(20000):
//           with counter.get_lock():
//               counter.value += 1
#include <fmt/format.h>

#include <mutex>
#include <vector>

#include "mp/process.h"
#include "mp/shared.h"

int main() {
  mp::Value<int> counter(0);  // shared memory + an RLock, inherited by children
  mp::Array<double> squares(8);

  std::vector<mp::Process> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&counter, &squares, w] {
      for (int i = 0; i < 20000; ++i) {
        std::lock_guard<mp::RLock> guard(counter.get_lock());
        counter.get_obj() += 1;  // read-modify-write under the lock
      }
      // Each worker fills its own two slots: no two write the same element.
      squares[2 * w] = (2.0 * w) * (2.0 * w);
      squares[2 * w + 1] = (2.0 * w + 1) * (2.0 * w + 1);
    });
  }
  for (auto& p : workers) p.start();
  for (auto& p : workers) p.join();

  fmt::print("counter = {} (4 x 20000)\n", counter.load());
  fmt::print("squares = [{}]\n", fmt::join(squares.to_vector(), ", "));
}
