#!/usr/bin/env bash
# tools/setup.sh — install every Debian package mp needs. Idempotent: quiet
# and fast (one dpkg query) when everything is already installed.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap      # Bazel 4.2.3, offline WORKSPACE mode
  g++
  libgtest-dev         # GoogleTest (conformance/)
  libgmock-dev
  libbenchmark-dev     # Google Benchmark (benchmarks/)
  libfmt-dev           # fmt (every formatted message)
  libssl-dev           # OpenSSL libcrypto: managers' HMAC authentication (//lib/mp:managers)
  cmake                # the CMake build and its consumers (tools/ci_consumers.sh)
  make                 # CMake's generator; the pkg-config consumer's Makefile
  pkg-config           # the pkg-config consumer (mp.pc)
  python3              # benchmark runner, report tool, CPython peers
  chromium             # headless render check of report.html (//tools/tests:report_html_test)
  clang-format         # tools/check_code.sh (CI): formatting, .clang-format
  clang-tidy           # tools/check_code.sh (CI): bug-finding checks, .clang-tidy
  clang-14             # the fuzz targets (tools/fuzz.sh): libFuzzer needs clang
  libclang-rt-14-dev   # libFuzzer and clang's sanitizer runtimes
  python3-matplotlib   # the charts of report.html and history.html (tools/bench_plots.py)
  libopenmpi-dev       # Open MPI headers and libraries: //lib/mp:mpi (mp/mpi.h)
  openmpi-bin          # mpirun: //conformance:mpi_pool_test, //benchmarks:mpi_pool
  python3-mpi4py       # mpi4py.futures.MPIPoolExecutor, the peer of //benchmarks:mpi_pool
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
