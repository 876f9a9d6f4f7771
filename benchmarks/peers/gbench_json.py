"""What every CPython peer script shares: Google Benchmark's JSON schema.

A peer measures CPython's multiprocessing/threading doing the same work as an
mp benchmark and prints its figures in the schema Google Benchmark writes, so
that run_all and bench_report pair them with mp's (`BM_X/cpython/...` beside
`BM_X/mp/...`). Not a peer itself (its name does not end in _peer.py).
"""
import json
import os
import platform
import sys
import time


def min_time(default):
    """Seconds each measurement runs: MP_PEER_MIN_TIME (run_all --quick sets it)."""
    return float(os.environ.get("MP_PEER_MIN_TIME", default))


def timed(fn, items_per_call, min_time):
    """Calls fn() until min_time seconds have passed: (calls, seconds, items)."""
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return calls, elapsed, calls * items_per_call


def entry(name, iterations, elapsed, items=None, bytes_per_item=None, cpu=None):
    """One benchmark record: `iterations` timed iterations in `elapsed` seconds
    of wall time (`cpu` seconds of CPU when known), `items` items processed
    (default: one per iteration), each of `bytes_per_item` bytes."""
    items = iterations if items is None else items
    real_ns = elapsed / iterations * 1e9
    record = {
        "name": name, "run_name": name, "run_type": "iteration",
        "repetitions": 1, "repetition_index": 0, "threads": 1,
        "iterations": iterations, "real_time": real_ns,
        "cpu_time": (cpu / iterations * 1e9) if cpu is not None else real_ns,
        "time_unit": "ns", "items_per_second": items / elapsed,
    }
    if bytes_per_item is not None:
        record["bytes_per_second"] = items * bytes_per_item / elapsed
    return record


class PinnedPair:
    """Pins this process and a child that calls in_child() to two different
    CPUs, as the C++ suites' bench::PinnedPair does (benchmarks/bench_util.h);
    restores this process's CPU set when the with-block ends. Does nothing
    where fewer than two CPUs are allowed."""

    def __init__(self):
        self.saved = os.sched_getaffinity(0)
        cpus = sorted(self.saved)
        self.cpus = cpus[:2] if len(cpus) >= 2 else None

    def __enter__(self):
        if self.cpus:
            os.sched_setaffinity(0, {self.cpus[0]})
        return self

    def __exit__(self, *exc):
        if self.cpus:
            os.sched_setaffinity(0, self.saved)
        return False

    def in_child(self):
        if self.cpus:
            os.sched_setaffinity(0, {self.cpus[1]})


def emit(benchmarks):
    """Prints the records as one Google Benchmark JSON document."""
    doc = {
        "context": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host_name": platform.node(),
            "executable": sys.executable,
            "num_cpus": os.cpu_count(),
            "python_version": platform.python_version(),
            "library_build_type": "release",
        },
        "benchmarks": benchmarks,
    }
    json.dump(doc, sys.stdout, indent=1)
    print()
