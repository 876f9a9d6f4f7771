#!/usr/bin/env python3
"""CPython peer for //benchmarks:spawn: multiprocessing.Process(noop)
start+join with the fork start method. Prints Google Benchmark JSON."""
import multiprocessing as mproc
import time

from gbench_json import emit, entry, min_time


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
    n, elapsed = measure(min_time("0.5"))
    emit([entry("BM_Spawn/cpython_process", n, elapsed)])


if __name__ == "__main__":
    main()
