#!/usr/bin/env python3
"""CPython peer for //benchmarks:pool: multiprocessing.Pool(2) with the fork
start method on the same workloads as pool_bench.cc (noop(int) tasks):
apply_async (20k submitted, then gathered), apply (blocking round trip),
map with chunksize 1 (20k), map with the default chunksize (200k),
imap_unordered (20k, chunksize 1), and 40 tasks of 1 ms busy work on Pool(1)
and Pool(2). Prints Google Benchmark JSON; items_per_second counts tasks."""
import multiprocessing as mproc
import os
import time

from gbench_json import emit, entry


def noop(x):
    return x


def busy_1ms(x):
    until = time.perf_counter() + 0.001
    while time.perf_counter() < until:
        pass
    return x


def timed(fn, items_per_call, min_time):
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return calls, elapsed, calls * items_per_call


def record(name, calls, elapsed, items):
    return entry(name, calls, elapsed, items=items)


def main():
    min_time = float(os.environ.get("MP_PEER_MIN_TIME", "0.3"))
    ctx = mproc.get_context("fork")
    out = []
    with ctx.Pool(2) as pool:
        n = 20000
        pool.map(noop, range(100), 1)  # warm up

        def apply_async():
            rs = [pool.apply_async(noop, (i,)) for i in range(n)]
            for r in rs:
                r.get()

        out.append(record("BM_Pool/cpython/apply_async", *timed(apply_async, n, min_time)))

        def apply():
            for i in range(200):
                pool.apply(noop, (i,))

        out.append(record("BM_Pool/cpython/apply", *timed(apply, 200, min_time)))
        items = list(range(20000))
        out.append(record("BM_Pool/cpython/map_chunk1",
                          *timed(lambda: pool.map(noop, items, 1), len(items), min_time)))
        big = list(range(200000))
        out.append(record("BM_Pool/cpython/map_default",
                          *timed(lambda: pool.map(noop, big), len(big), min_time)))

        def imap_unordered():
            for _ in pool.imap_unordered(noop, items):
                pass

        out.append(record("BM_Pool/cpython/imap_unordered", *timed(imap_unordered, len(items), min_time)))
    for workers in (1, 2):
        with ctx.Pool(workers) as pool:
            work = list(range(40))
            out.append(record(f"BM_Pool/cpython/work1ms/{workers}",
                              *timed(lambda: pool.map(busy_1ms, work, 1), len(work), min_time)))
    emit(out)


if __name__ == "__main__":
    main()
