#!/usr/bin/env python3
"""CPython peer for //benchmarks:spawn: multiprocessing.Process(noop)
start+join with each start method (fork, forkserver, spawn). Prints Google
Benchmark JSON: BM_Spawn/cpython_process (fork), BM_Spawn/cpython_forkserver,
BM_Spawn/cpython_spawn."""
import multiprocessing as mproc
import time

from gbench_json import emit, entry, min_time


def noop():
    pass


def measure(method, min_time, at_least):
    ctx = mproc.get_context(method)
    if method == "forkserver":
        # Started before timing, as BM_Spawn/mp_forkserver's server is.
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    n = 0
    start = time.perf_counter()
    while True:
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and n >= at_least:
            return n, elapsed


def main():
    t = min_time("0.5")
    rows = []
    for method, name, at_least in (("fork", "cpython_process", 10),
                                   ("forkserver", "cpython_forkserver", 10),
                                   ("spawn", "cpython_spawn", 3)):
        n, elapsed = measure(method, t, at_least)
        rows.append(entry(f"BM_Spawn/{name}", n, elapsed))
    emit(rows)


if __name__ == "__main__":
    main()
