// A remote manager (CPython's "Using a remote manager"): a server program
// that serves one shared job queue and one results dict over TCP, and
// client programs on any machine that connect with the authkey.
//
//   remote_manager serve 50000          # program 1: the server
//   remote_manager work 50000           # program 2: a client (run several)
//   bazel run //examples:remote_manager # starts both on localhost and shows them
//
// Both programs register the same shared type by name; a client with the
// wrong authkey is refused (mp::AuthenticationError) before the server
// decodes a byte it sent.
#include <fmt/core.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <string>

#include "mp/managers.h"

namespace {

constexpr const char* kAuthkey = "example secret";

// Board: the one object the server shares with every client.
struct Board {
  std::map<std::string, long long> results;
  void post(std::string name, long long value) { results[name] = value; }
  std::map<std::string, long long> read() const { return results; }
};
const bool kBoardRegistered = mp::register_type<Board>("Board")
                                  .method<&Board::post>("post")
                                  .method<&Board::read>("read")
                                  .shared();

int serve(std::uint16_t port) {
  mp::serve_forever(mp::Address::tcp("127.0.0.1", port), kAuthkey, [](const mp::Address& a) {
    fmt::print("server: listening on {}\n", a.str());
    std::fflush(stdout);
  });
  return 0;
}

int work(std::uint16_t port) {
  auto manager = mp::Manager::connect(mp::Address::tcp("127.0.0.1", port), kAuthkey);
  auto board = manager.create<Board>();  // the server's one Board
  long long sum = 0;
  for (int i = 1; i <= 100; ++i) sum += i;
  board.call<&Board::post>(fmt::format("client-{}", getpid()), sum);
  for (const auto& [name, value] : board.call<&Board::read>()) {
    fmt::print("client: {} posted {}\n", name, value);
  }
  try {
    mp::Manager::connect(manager.address(), "wrong key");
  } catch (const mp::AuthenticationError& e) {
    fmt::print("client: a wrong key is refused: {}\n", e.what());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  (void)kBoardRegistered;
  const std::string mode = argc > 1 ? argv[1] : "";
  const auto port = static_cast<std::uint16_t>(argc > 2 ? std::atoi(argv[2]) : 50321);
  if (mode == "serve") return serve(port);
  if (mode == "work") return work(port);
  // Demo: the server and a client as two programs (this one, exec'd twice).
  const pid_t server = fork();
  if (server == 0) {
    execl("/proc/self/exe", argv[0], "serve", std::to_string(port).c_str(), nullptr);
    _exit(127);
  }
  for (int attempt = 0;; ++attempt) {  // wait until it listens
    try {
      mp::Manager::connect(mp::Address::tcp("127.0.0.1", port), kAuthkey);
      break;
    } catch (const mp::ConnectionError&) {
      if (attempt == 100) return 1;
      usleep(20'000);
    }
  }
  const pid_t client = fork();
  if (client == 0) {
    execl("/proc/self/exe", argv[0], "work", std::to_string(port).c_str(), nullptr);
    _exit(127);
  }
  int status = 0;
  waitpid(client, &status, 0);
  kill(server, SIGTERM);  // a server runs until it is stopped
  waitpid(server, &status, 0);
  return 0;
}
