#!/usr/bin/env bash
# tools/ci_consumers.sh — the CI step that uses mp as another project would
# (.ci/run calls it; README, "Use mp in your project", is what it checks).
#
#   1. CMake: configure mp with its tests and benchmarks, build everything,
#      run the conformance suites with ctest (MP_CI_CTEST=0 skips the run).
#   2. tools/check_build_lists.py: Bazel and CMake compile the same files.
#   3. cmake --install into a temporary prefix.
#   4. examples/consumer built and run four ways, each binary's output
#      compared with examples/consumer/expected_output.txt:
#        find_package       examples/consumer/CMakeLists.txt against the prefix
#        add_subdirectory   examples/consumer/vendored/ (mp's tests not built)
#        pkg-config         examples/consumer/Makefile
#        bazel              examples/consumer/ as a Bazel workspace
#      plus: find_package(mp <other major>) is refused (mpConfigVersion.cmake).
#
# Usage: tools/ci_consumers.sh [--junit FILE]
# Prints each check's result and time; with --junit, writes one JUnit
# <testcase> per check to FILE, for tools/count_tests.py. Exit status 1 when
# any check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

junit=""
while (($#)); do
  case "$1" in
    --junit) junit=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "ci_consumers: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

jobs=${MP_CI_JOBS:-2}
tmp=$(mktemp -d /tmp/mp-consumers.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
expected="$root/examples/consumer/expected_output.txt"

names=() results=() times=() logs=()
failed=0

# check NAME COMMAND...: runs COMMAND with its output in a log, records
# pass/fail and seconds, and prints the log's tail when it failed.
check() {
  local name=$1; shift
  local log="$tmp/$name.log" start=$SECONDS rc
  echo "-- $name"
  "$@" >"$log" 2>&1
  rc=$?
  local secs=$((SECONDS - start))
  names+=("$name") times+=("$secs") logs+=("$log")
  if ((rc == 0)); then
    results+=(pass)
    echo "   ok ($secs s)"
  else
    results+=(fail)
    failed=1
    echo "   FAILED ($secs s, exit $rc); last lines:"
    tail -n 40 "$log" | sed 's/^/   | /'
  fi
}

# runs_as_expected BINARY: the consumer prints expected_output.txt.
runs_as_expected() {
  "$1" >"$1.out" 2>&1 || { cat "$1.out"; echo "$1 exited $?"; return 1; }
  diff -u "$expected" "$1.out"
}

mp_build() {
  mkdir -p "$tmp/build/.cmake/api/v1/query" &&
    touch "$tmp/build/.cmake/api/v1/query/codemodel-v2" &&  # for check_build_lists
    cmake -S "$root" -B "$tmp/build" -DMP_BUILD_TESTS=ON -DMP_BUILD_BENCHMARKS=ON &&
    cmake --build "$tmp/build" -j "$jobs"
}

mp_ctest() {
  if [[ ${MP_CI_CTEST:-1} == 0 ]]; then echo "skipped: MP_CI_CTEST=0"; return 0; fi
  (cd "$tmp/build" && ctest --output-on-failure)
}

mp_install() {
  cmake --install "$tmp/build" --prefix "$tmp/prefix" &&
    for f in include/mp/process.h include/mp/internal/shm.h lib/libmp.a \
             lib/cmake/mp/mpConfig.cmake lib/cmake/mp/mpConfigVersion.cmake lib/pkgconfig/mp.pc; do
      [[ -e $tmp/prefix/$f ]] || { echo "not installed: $f"; return 1; }
    done
}

consumer_find_package() {
  cmake -S "$root/examples/consumer" -B "$tmp/find_package" -DCMAKE_PREFIX_PATH="$tmp/prefix" &&
    cmake --build "$tmp/find_package" -j "$jobs" &&
    runs_as_expected "$tmp/find_package/app"
}

version_refused() {
  mkdir -p "$tmp/version" &&
    printf 'cmake_minimum_required(VERSION 3.20)\nproject(v LANGUAGES CXX)\nfind_package(mp 99 CONFIG REQUIRED)\n' \
      >"$tmp/version/CMakeLists.txt" || return 1
  if cmake -S "$tmp/version" -B "$tmp/version/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
      >"$tmp/version/out" 2>&1; then
    echo "find_package(mp 99) was accepted"; return 1
  fi
  cat "$tmp/version/out"
  grep -q "considered but not accepted" "$tmp/version/out"  # found, refused for its version
}

consumer_add_subdirectory() {
  cmake -S "$root/examples/consumer/vendored" -B "$tmp/vendored" &&
    cmake --build "$tmp/vendored" -j "$jobs" &&
    runs_as_expected "$tmp/vendored/app" || return 1
  if cmake --build "$tmp/vendored" --target help | grep -Eq '_test|_bench'; then
    echo "mp's tests or benchmarks are targets of a project that did not ask for them"; return 1
  fi
}

consumer_pkg_config() {
  mkdir -p "$tmp/pkg-config" &&
    PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" make -C "$tmp/pkg-config" \
      -f "$root/examples/consumer/Makefile" &&
    runs_as_expected "$tmp/pkg-config/app"
}

consumer_bazel() {
  local rc=0
  (cd "$root/examples/consumer" &&
    bazel build --curses=no --color=no --show_progress_rate_limit=30 //:app &&
    cp -f bazel-bin/app "$tmp/bazel-app") || rc=1
  # The consumer workspace has its own Bazel server: do not leave it running.
  (cd "$root/examples/consumer" && bazel shutdown) || true
  ((rc == 0)) && runs_as_expected "$tmp/bazel-app"
}

# Every check runs even when an earlier one failed, so that CI always counts
# the same cases; a failed build or install makes the later ones fail too.
check cmake_build mp_build
check ctest_conformance mp_ctest
check check_build_lists python3 tools/check_build_lists.py --cmake-build "$tmp/build"
check cmake_install mp_install
check consumer_find_package consumer_find_package
check find_package_other_version_refused version_refused
check consumer_add_subdirectory consumer_add_subdirectory
check consumer_pkg_config consumer_pkg_config
check consumer_bazel consumer_bazel

echo "== consumer checks (seconds)"
for i in "${!names[@]}"; do printf '   %-36s %-4s %4s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"; done

if [[ -n $junit ]]; then
  python3 - "$junit" "${#names[@]}" "${names[@]}" "${results[@]}" "${times[@]}" "${logs[@]}" <<'EOF'
import sys
import xml.etree.ElementTree as ET
path, n = sys.argv[1], int(sys.argv[2])
names, results, times, logs = (sys.argv[3 + i * n:3 + (i + 1) * n] for i in range(4))
suite = ET.Element("testsuite", name="ci_consumers", tests=str(n),
                   failures=str(results.count("fail")))
for name, result, secs, log in zip(names, results, times, logs):
    case = ET.SubElement(suite, "testcase", classname="ci_consumers", name=name, time=secs)
    if result == "fail":
        with open(log, errors="replace") as f:
            text = f.read()[-4000:]
        ET.SubElement(case, "failure", message=f"{name} failed").text = text
root = ET.Element("testsuites")
root.append(suite)
ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
EOF
fi
exit $failed
