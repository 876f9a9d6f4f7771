#!/usr/bin/env bash
# Runs //conformance:mpi_pool_test's binary as an MPI job of three ranks:
#   mpi_pool_test.sh <binary> [gtest flags...]
# rank 0 runs the tests, ranks 1 and 2 are the pools' workers. TCP is forced
# (--mca btl tcp,self), so messages take the path a job across machines
# takes. GoogleTest (rank 0) writes its per-case results where Bazel asks
# (XML_OUTPUT_FILE), as the other suites do.
set -u
bin="$1"
shift
if ! command -v mpirun >/dev/null 2>&1; then
  echo "mpi_pool_test: mpirun not found: install openmpi-bin (tools/setup.sh)" >&2
  exit 1
fi
# CI runs as root, which mpirun refuses unless told; here only.
if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Open MPI keeps its session directory, and PMIx its sockets, under TMPDIR:
# a Bazel test's own temporary directory is too deep for a socket's path.
TMPDIR=$(mktemp -d /tmp/mp-mpi-test.XXXXXX)
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
# Under --config=asan: Open MPI's allocations live until the process exits.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
mpirun -n 3 --oversubscribe --mca btl tcp,self "$bin" "$@"
