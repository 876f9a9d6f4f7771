#!/usr/bin/env python3
"""CPython peer for //benchmarks:spawn: multiprocessing.Process(noop)
start+join with the fork start method. Prints Google Benchmark JSON."""
import json
import multiprocessing as mproc
import os
import platform
import sys
import time


def noop():
    pass


def measure(min_time):
    ctx = mproc.get_context("fork")
    n = 0
    start = time.perf_counter()
    while True:
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and n >= 10:
            return n, elapsed


def main():
    min_time = float(os.environ.get("MP_PEER_MIN_TIME", "0.5"))
    n, elapsed = measure(min_time)
    per = elapsed / n * 1e9
    out = {
        "context": {"executable": sys.executable, "python": platform.python_version(),
                    "num_cpus": os.cpu_count()},
        "benchmarks": [{
            "name": "BM_Spawn/cpython_process", "run_name": "BM_Spawn/cpython_process",
            "run_type": "iteration", "repetitions": 1, "repetition_index": 0,
            "iterations": n, "real_time": per, "cpu_time": per, "time_unit": "ns",
            "items_per_second": n / elapsed,
        }],
    }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
