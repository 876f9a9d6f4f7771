// Tutorial: Ping and Pong each count to 50 on their own copy of a global.
// Memory is separate after start(): the parent's counter stays 0.
//   bazel run //examples:ping_pong_counter
#include <fmt/format.h>

#include <string>

#include "mp/process.h"

int counter = 0;

void count(const std::string& who) {
  for (int i = 0; i < 50; ++i) {
    ++counter;
    if (i % 10 == 9) fmt::print("{}: counter = {}\n", who, counter);
  }
}

int main() {
  mp::Process ping(count, std::string("Ping"));
  mp::Process pong(count, std::string("Pong"));
  ping.start();
  pong.start();
  ping.join();
  pong.join();
  fmt::print("parent: counter = {} (each child counted on its own copy)\n", counter);
}
