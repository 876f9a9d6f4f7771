// Tutorial: the processes on one side of a queue die. With CPython's
// multiprocessing.Queue the other side waits forever: a get() whose
// producers are gone, a put() into a full queue whose consumers are gone,
// a JoinableQueue.join() whose workers are gone. mp tells each of them:
// EOFError for the get, BrokenPipeError for the put and the join, and the
// queue keeps every item that was in it.
//   bazel run //examples:queue_dead_peers
#include <fmt/format.h>
#include <unistd.h>

#include "mp/process.h"
#include "mp/queue.h"

int main() {
  // 1. A consumer whose producer is killed: get() raises EOFError instead
  //    of waiting forever (once the queue is empty).
  mp::Queue<int> results;
  mp::Process producer([&] {
    results.put(1);
    results.put(2);
    for (;;) pause();  // never puts again
  });
  producer.start();
  fmt::print("got {}\n", results.get());
  producer.kill();
  producer.join();
  fmt::print("got {}\n", results.get());  // still there after the death
  try {
    results.get();
  } catch (const mp::EOFError& e) {
    fmt::print("get(): {}\n", e.what());
  }

  // 2. A producer whose consumer is killed: a put() blocked on the full
  //    queue raises BrokenPipeError, and nothing is lost.
  mp::JoinableQueue<int> jobs(2);  // at most 2 items
  mp::Process worker([&] {
    jobs.get();  // takes one job, never marks it done
    for (;;) pause();
  });
  worker.start();
  jobs.put(10);
  jobs.put(11);
  jobs.put(12);  // waits for the worker to take job 10
  worker.kill();
  worker.join();
  try {
    jobs.put(13);  // full, and nobody is left to make room
  } catch (const mp::BrokenPipeError& e) {
    fmt::print("put(): {}\n", e.what());
  }
  fmt::print("queue still holds {} items\n", jobs.qsize());

  // 3. join() on tasks nobody is left to finish raises too.
  try {
    jobs.join();
  } catch (const mp::BrokenPipeError& e) {
    fmt::print("join(): {}\n", e.what());
  }
}
