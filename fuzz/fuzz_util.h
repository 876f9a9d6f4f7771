// fuzz/fuzz_util.h — what the libFuzzer targets in fuzz/ share: how a
// finding is reported, and how a target writes its seed corpus.
//
// Harness rule (both targets): a decode may fail only with the mp error its
// contract names. Anything else (another exception, a crash, a sanitizer
// report, a leak, an allocation past the target's -malloc_limit_mb) is a
// finding; finding() aborts, so libFuzzer keeps the input as a crash-* file.
#pragma once

#include <fmt/core.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>
#include <typeinfo>
#include <vector>

namespace mp_fuzz {

// finding(what) reports a broken promise and aborts (libFuzzer saves the
// input that got here).
[[noreturn]] inline void finding(std::string_view what) {
  std::fputs(fmt::format("mp fuzz finding: {}\n", what).c_str(), stderr);
  std::abort();
}

// describe(e) names an exception that escaped: its dynamic type and what().
inline std::string describe(const std::exception& e) {
  return fmt::format("{} ({})", typeid(e).name(), e.what());
}

// write_seeds_if_asked(target, seeds) writes each seed as a file
// `seed-<target>-<i>` into $MP_FUZZ_WRITE_SEEDS and exits, when that
// variable is set (tools/fuzz.sh --write-seeds); otherwise does nothing.
inline void write_seeds_if_asked(std::string_view target, const std::vector<std::string>& seeds) {
  const char* dir = std::getenv("MP_FUZZ_WRITE_SEEDS");
  if (dir == nullptr || *dir == '\0') return;
  std::error_code ignored;  // a directory that cannot be made fails the first write
  std::filesystem::create_directories(dir, ignored);
  for (std::size_t i = 0; i < seeds.size(); ++i) {
    const std::string path = fmt::format("{}/seed-{}-{:03}", dir, target, i);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(seeds[i].data(), static_cast<std::streamsize>(seeds[i].size()));
    if (!out) {
      std::fputs(fmt::format("cannot write {}\n", path).c_str(), stderr);
      std::exit(1);
    }
  }
  std::fputs(fmt::format("wrote {} seeds to {}\n", seeds.size(), dir).c_str(), stderr);
  std::exit(0);
}

}  // namespace mp_fuzz
