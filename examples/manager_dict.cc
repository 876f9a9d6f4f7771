// Processes sharing a dict through a Manager (CPython's
// multiprocessing.Manager().dict()): four workers count words into one
// dict held by the manager's server process. update() runs the registered
// add_one inside the server, so two workers counting the same word at once
// never lose an increment (a get() then set() would).
//
//   bazel run //examples:manager_dict
#include <fmt/core.h>

#include <string>
#include <vector>

#include "mp/context.h"
#include "mp/managers.h"
#include "mp/process.h"

int add_one(int n) { return n + 1; }
MP_MANAGER_FUNCTION(add_one);  // the server finds it by name

void count_words(mp::DictProxy<std::string, int> counts, std::vector<std::string> words) {
  for (const auto& w : words) counts.update(w, add_one);
}

int main() {
  mp::freeze_support();
  mp::Manager manager;  // starts the server process; stopped at scope end
  auto counts = manager.dict<std::string, int>();
  const std::vector<std::vector<std::string>> chunks = {
      {"the", "cat", "sat"}, {"on", "the", "mat"}, {"the", "end"}, {"cat", "nap"}};
  std::vector<mp::Process> workers;
  for (const auto& chunk : chunks) {
    workers.emplace_back(count_words, counts, chunk);  // the proxy travels
    workers.back().start();
  }
  for (auto& w : workers) w.join();
  for (const auto& [word, n] : counts.copy()) fmt::print("{}: {}\n", word, n);
}
