// The tutorial's threaded download, written with mp::Thread: two "downloads"
// (a random 1-3 s sleep each) run at once, so the total is about the longer
// one, not the sum. First with Thread(target, args...), then with a
// DownloadTask subclass that overrides run().
//
//   bazel run //examples:thread_download
#include <fmt/format.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <utility>

#include "mp/threading.h"

namespace {

using Clock = std::chrono::steady_clock;

int random_seconds() {
  thread_local std::mt19937 rng(std::random_device{}());
  return std::uniform_int_distribution<int>(1, 3)(rng);
}

void download(std::string file) {
  fmt::print("Downloading {}...\n", file);
  int seconds = random_seconds();
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  fmt::print("{} finished in {}s\n", file, seconds);
}

// DownloadTask is the subclass form: the file is a member, run() downloads it.
class DownloadTask : public mp::Thread {
 public:
  explicit DownloadTask(std::string file) : file_(std::move(file)) {}
  // The thread uses this object's members: make sure it has ended before
  // they are destroyed.
  ~DownloadTask() override { join_if_started(); }

  void run() override { download(file_); }

 private:
  std::string file_;
};

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main() {
  fmt::print("-- Thread(target, args...)\n");
  auto start = Clock::now();
  mp::Thread t1(download, "a.pdf");
  mp::Thread t2(download, "b.pdf");
  t1.start();
  t2.start();
  t1.join();
  t2.join();
  fmt::print("Total time: {:.2f}s\n", seconds_since(start));
  fmt::print("  {}\n  {}\n", t1, t2);

  fmt::print("-- DownloadTask subclass\n");
  start = Clock::now();
  DownloadTask d1("c.pdf");
  DownloadTask d2("d.pdf");
  d1.start();
  d2.start();
  d1.join();
  d2.join();
  fmt::print("Total time: {:.2f}s\n", seconds_since(start));
  fmt::print("  {}\n  {}\n", d1, d2);
}
