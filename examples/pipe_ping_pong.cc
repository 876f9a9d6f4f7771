// Tutorial: two processes talk over mp::Pipe().
//
// Part 1 is the Pipe example of CPython's multiprocessing docs: a child
// sends one value ([42, None, 'hello'] in Python; a tuple here) and the
// parent prints it.
// Part 2 plays ping-pong: parent and child pass a counter back and forth,
// each adding one, until it reaches 50; then the parent closes its end and
// the child, seeing end-of-file, leaves. The parent's end is marked
// close_on_fork() so the child never holds a copy of it — otherwise the
// child would wait forever for an end-of-file its own copy prevents.
//   bazel run //examples:pipe_ping_pong
#include <fmt/format.h>

#include <cstdio>
#include <optional>
#include <string>
#include <tuple>

#include "mp/connection.h"
#include "mp/process.h"

int main() {
  // Part 1: send one value from a child.
  {
    auto [parent_conn, child_conn] = mp::Pipe();
    mp::Process p([&child_conn] {
      child_conn.send(std::tuple<int, std::optional<int>, std::string>{42, std::nullopt, "hello"});
      child_conn.close();
    });
    p.start();
    auto [n, none, text] = parent_conn.recv<std::tuple<int, std::optional<int>, std::string>>();
    fmt::print("received ({}, {}, '{}')\n", n, none ? std::to_string(*none) : "None", text);
    p.join();
  }

  // Part 2: ping-pong to 50.
  auto [ping, pong] = mp::Pipe();
  ping.close_on_fork();
  mp::Process child([&pong] {
    try {
      for (;;) {
        int counter = pong.recv<int>();
        pong.send(counter + 1);
      }
    } catch (const mp::EOFError&) {
      fmt::print("pong: the other end closed, leaving\n");
    }
  });
  child.start();
  pong.close();  // the child holds the only copy it needs

  int counter = 0;
  while (counter < 50) {
    ping.send(counter + 1);
    if (!ping.poll(std::chrono::seconds(5))) {
      fmt::print("no answer in 5 s\n");
      return 1;
    }
    counter = ping.recv<int>();
    if (counter % 10 == 0) {
      fmt::print("ping: counter = {}\n", counter);
      std::fflush(stdout);  // keep the order readable when stdout is a pipe
    }
  }
  ping.close();
  child.join();
  fmt::print("final counter = {}, child exitcode = {}\n", counter, child.exitcode().value_or(-1));
  return counter == 50 && child.exitcode() == 0 ? 0 : 1;
}
