#!/usr/bin/env bash
# tools/fuzz.sh — build mp's libFuzzer targets (fuzz/*_fuzz.cc) with clang,
# AddressSanitizer and UBSan, and run each for a while. CI (.ci/run) runs it
# for 25 seconds a target; run it longer by hand.
#
#   codec        mp::decode<T> of arbitrary bytes, for 34 types
#   connection   Connection::recv / recv_bytes / recv_bytes_into / recv<T>
#                on arbitrary bytes written by a peer (socketpair or pipe)
#
# A target fails on a crash, a sanitizer report (leaks included), an
# exception other than the mp error the contract names, a value that does
# not survive re-encoding, a hang (-timeout), or a single allocation past
# its -malloc_limit_mb (each target's header says why that limit).
#
# Usage: tools/fuzz.sh [SECONDS] [--junit FILE] [--only NAME] [--write-seeds]
#   SECONDS        how long each target fuzzes (default 60); the targets run
#                  at the same time, one process each
#   --junit FILE   write one JUnit <testcase> per target to FILE
#                  (tools/count_tests.py counts it)
#   --only NAME    fuzz only fuzz/NAME_fuzz.cc (codec, connection)
#   --write-seeds  rewrite fuzz/corpus/NAME/seed-* from the encoder, then stop
#
# Build: CMake, -DMP_BUILD_FUZZERS=ON, in $MP_FUZZ_BUILD (default
# build/fuzz/, kept between runs). Corpus: what a run finds goes into
# $MP_FUZZ_BUILD/corpus/NAME/; the committed fuzz/corpus/NAME/ (seeds and
# every input that once found a bug) is read, never written. A finding is
# saved as $MP_FUZZ_BUILD/findings/<date-time>/NAME-crash-* (the script
# prints the command that replays it: `$MP_FUZZ_BUILD/fuzz/NAME_fuzz FILE`);
# commit it to fuzz/corpus/NAME/ with the fix. Exit status 1 when a target
# failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=60 junit="" only="" write_seeds=0
while (($#)); do
  case "$1" in
    --junit) junit=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --write-seeds) write_seeds=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    [0-9]*) seconds=$1; shift ;;
    *) echo "fuzz.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

build=${MP_FUZZ_BUILD:-$root/build/fuzz}
jobs=${MP_CI_JOBS:-2}
cxx=${MP_FUZZ_CXX:-$(command -v clang++-14 || command -v clang++ || echo clang++)}

# Per target: libFuzzer's input size and allocation limits (see the
# target's header for the bound the decoder promises).
declare -A flags=(
  [codec]="-max_len=16384 -malloc_limit_mb=1"
  [connection]="-max_len=131072 -malloc_limit_mb=5"
)

targets=()
for src in fuzz/*_fuzz.cc; do
  name=$(basename "$src" _fuzz.cc)
  [[ -z $only || $only == "$name" ]] && targets+=("$name")
done
if ((${#targets[@]} == 0)); then echo "fuzz.sh: no target named '$only'" >&2; exit 2; fi

findings=$build/findings/$(date +%Y%m%d-%H%M%S)  # this run's
mkdir -p "$build/logs" "$findings"
# A build directory configured with another compiler is configured afresh
# (CMake would drop this script's -D options while switching).
if [[ -f $build/CMakeCache.txt ]] &&
   ! grep -q "^CMAKE_CXX_COMPILER:[A-Z]*=$cxx\$" "$build/CMakeCache.txt"; then
  rm -rf "$build/CMakeCache.txt" "$build/CMakeFiles"
fi
echo "-- build (clang: $cxx, into $build)"
start=$SECONDS
build_log=$build/logs/build.log
if cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=Debug \
     -DMP_BUILD_FUZZERS=ON -DMP_BUILD_TESTS=OFF -DMP_BUILD_BENCHMARKS=OFF -DMP_INSTALL=OFF \
     >"$build_log" 2>&1 &&
   cmake --build "$build" -j "$jobs" --target "${targets[@]/%/_fuzz}" >>"$build_log" 2>&1; then
  built=1
  echo "   ok ($((SECONDS - start)) s)"
else
  built=0
  echo "   FAILED ($((SECONDS - start)) s); last lines:"
  tail -n 30 "$build_log" | sed 's/^/   | /'
fi

if ((write_seeds)); then
  ((built)) || exit 1
  for name in "${targets[@]}"; do
    rm -f "fuzz/corpus/$name"/seed-*
    MP_FUZZ_WRITE_SEEDS="$root/fuzz/corpus/$name" "$build/fuzz/${name}_fuzz" || exit 1
  done
  exit 0
fi

# fuzz NAME: one target for $seconds; its output goes to logs/NAME.log.
fuzz() {
  local name=$1 work="$build/corpus/$1"
  mkdir -p "$work"
  # shellcheck disable=SC2086  # flags are words
  "$build/fuzz/${name}_fuzz" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    ${flags[$name]:-} -artifact_prefix="$findings/$name-" \
    "$work" "$root/fuzz/corpus/$name" >"$build/logs/$name.log" 2>&1
}

pids=() results=() times=()
if ((built)); then
  echo "-- fuzz ${targets[*]} for $seconds s each, at the same time"
  for name in "${targets[@]}"; do fuzz "$name" & pids+=($!); done
fi
failed=0
for i in "${!targets[@]}"; do
  name=${targets[$i]} log="$build/logs/${targets[$i]}.log"
  if ((built)); then
    wait "${pids[$i]}"; rc=$?
  else
    rc=1; cp "$build_log" "$log"
  fi
  times+=("$seconds")
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  if ((rc == 0)); then
    results+=(pass)
    echo "   $name: ok (${runs:-?} inputs)"
  else
    results+=(fail); failed=1
    echo "   $name: FAILED (exit $rc); log $log; last lines:"
    grep -v '^    #[0-9]' "$log" | tail -n 25 | sed 's/^/   | /'
    for f in "$findings/$name"-*; do
      [[ -e $f ]] && echo "   reproduce: $build/fuzz/${name}_fuzz $f"
    done
  fi
done

rmdir "$findings" 2>/dev/null  # kept only when something was found

if [[ -n $junit ]]; then
  logs=()
  for name in "${targets[@]}"; do logs+=("$build/logs/$name.log"); done
  python3 - "$junit" "${#targets[@]}" "${targets[@]}" "${results[@]}" "${times[@]}" \
    "${logs[@]}" <<'EOF'
import sys
import xml.etree.ElementTree as ET
path, n = sys.argv[1], int(sys.argv[2])
names, results, times, logs = (sys.argv[3 + i * n:3 + (i + 1) * n] for i in range(4))
suite = ET.Element("testsuite", name="fuzz", tests=str(n), failures=str(results.count("fail")))
for name, result, secs, log in zip(names, results, times, logs):
    case = ET.SubElement(suite, "testcase", classname="fuzz", name=name, time=secs)
    if result == "fail":
        with open(log, errors="replace") as f:
            text = f.read()[-4000:]
        ET.SubElement(case, "failure", message=f"fuzz target {name} failed").text = text
root = ET.Element("testsuites")
root.append(suite)
ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
EOF
fi
exit $failed
