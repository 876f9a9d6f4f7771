#!/usr/bin/env bash
# tools/check_code.sh — the code checks CI runs beside the tests:
#   format: every C++ file under lib/ conformance/ benchmarks/ examples/
#           fuzz/ is as clang-format leaves it (.clang-format: Google style,
#           100 columns). Fix with: tools/check_code.sh --fix
#   tidy:   clang-tidy's bug-finding checks (.clang-tidy) over lib/mp's
#           sources and the headers they include, with the flags of the
#           CMake build (a configure only: nothing is compiled).
# Usage: tools/check_code.sh [--fix] [--junit FILE]
# Exit status 0 when both pass. With --junit, writes one JUnit test case per
# check (counted by tools/count_tests.py in CI).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

fix=0
junit=""
while (($#)); do
  case "$1" in
    --fix) fix=1; shift ;;
    --junit) junit=$2; shift 2 ;;
    *) echo "usage: $0 [--fix] [--junit FILE]" >&2; exit 2 ;;
  esac
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mapfile -t cxx < <(git ls-files -- 'lib/*.h' 'lib/*.cc' 'conformance/*.h' 'conformance/*.cc' \
  'benchmarks/*.h' 'benchmarks/*.cc' 'examples/*.h' 'examples/*.cc' 'fuzz/*.h' 'fuzz/*.cc')

check_format() {
  if ((fix)); then
    clang-format -i "${cxx[@]}"
    return 0
  fi
  clang-format --dry-run --Werror "${cxx[@]}" 2>&1 | head -n 60
  return "${PIPESTATUS[0]}"
}

check_tidy() {
  cmake -S "$root" -B "$tmp/build" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >"$tmp/cmake.log" 2>&1 ||
    { cat "$tmp/cmake.log"; return 1; }
  local out="$tmp/tidy.log"
  git ls-files -- 'lib/mp/*.cc' |
    xargs -P "$(nproc)" -n 4 clang-tidy -p "$tmp/build" --quiet >"$out" 2>&1
  local rc=$?
  grep -E "(warning|error):" "$out" | sort -u
  return $rc
}

names=()
results=()
times=()
failed=0
for check in format tidy; do
  echo "== $check"
  start=$(date +%s)
  if "check_$check"; then results+=(pass); echo "   ok"; else results+=(fail); failed=1; fi
  names+=("$check")
  times+=($(($(date +%s) - start)))
done

if [[ -n $junit ]]; then
  {
    echo '<?xml version="1.0" encoding="UTF-8"?>'
    echo "<testsuites><testsuite name=\"check_code\" tests=\"${#names[@]}\">"
    for i in "${!names[@]}"; do
      echo "<testcase classname=\"check_code\" name=\"${names[$i]}\" time=\"${times[$i]}\">"
      [[ ${results[$i]} == pass ]] || echo "<failure message=\"${names[$i]} failed\"/>"
      echo "</testcase>"
    done
    echo "</testsuite></testsuites>"
  } >"$junit"
fi
exit $failed
