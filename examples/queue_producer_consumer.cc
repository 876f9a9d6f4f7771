// Tutorial: a writer process and an endless reader process talk through an
// mp::Queue; the parent ends the reader with terminate(), as CPython's
// "reader_proc" example does with a multiprocessing.Queue.
//   bazel run //examples:queue_producer_consumer
#include <fmt/format.h>

#include <string>

#include "mp/process.h"
#include "mp/queue.h"

int main() {
  mp::Queue<std::string> jobs;  // created before the processes start
  mp::Queue<int> lengths;

  // The reader never stops on its own: it reads a job, reports its length.
  mp::Process reader([&] {
    for (;;) {
      std::string job = jobs.get();
      lengths.put(static_cast<int>(job.size()));
    }
  });
  mp::Process writer([&] {
    for (int i = 0; i < 5; ++i) jobs.put(std::string(static_cast<std::size_t>(i) * 1000, 'x'));
    jobs.put(std::string(8u << 20, 'y'));  // 8 MiB: larger than the ring, streamed
  });
  reader.start();
  writer.start();

  for (int i = 0; i < 6; ++i) fmt::print("reader saw a job of {} bytes\n", lengths.get());
  writer.join();

  fmt::print("queue size now: {} (exact, no feeder thread)\n", jobs.qsize());
  reader.terminate();  // the endless reader is ended from outside
  reader.join();
  fmt::print("reader exitcode: {} (-SIGTERM)\n", *reader.exitcode());
  fmt::print("writer exitcode: {}\n", *writer.exitcode());
}
