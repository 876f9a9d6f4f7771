#!/usr/bin/env python3
"""CPython peer for //benchmarks:pool: multiprocessing.Pool(2) with the fork
start method on the same workloads as pool_bench.cc (noop(int) tasks):
apply_async (20k submitted, then gathered), apply (blocking round trip),
map with chunksize 1 (20k), map with the default chunksize (200k),
imap_unordered (20k, chunksize 1), 40 tasks of 1 ms busy work on Pool(1)
and Pool(2), and the scaling grid BM_Pool/cpython/cpu_work/<task_us>/<workers>
(tasks of 1, 50 and 1000 us of CPU work, calibrated on one core as
pool_bench.cc calibrates its own, on Pool(1), Pool(2), Pool(4), ... up to
the usable CPUs; map with chunksize 1, the same number of tasks per round as
pool_bench.cc). Prints Google Benchmark JSON; items_per_second counts tasks."""
import multiprocessing as mproc
import os
import time

from gbench_json import emit, entry, timed


def noop(x):
    return x


def busy_1ms(x):
    until = time.perf_counter() + 0.001
    while time.perf_counter() < until:
        pass
    return x


def spin(n):
    """n rounds of an integer recurrence: CPU work, no memory, no clock."""
    x = 88172645463325252
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
    return x


def spins_per_us():
    """Rounds of spin() per microsecond on one core: the best of fifteen
    samples of a few ms, each long enough to swamp the call and short enough
    that on a busy machine some run without being preempted (as
    pool_bench.cc does)."""
    best = 0.0
    for _ in range(15):
        n = 10_000
        t0 = time.perf_counter()
        spin(n)
        best = max(best, n / ((time.perf_counter() - t0) * 1e6))
    return best


SPINS = 0          # rounds per task; set before each grid pool forks


def call_overhead_us():
    """What a call of cpu_work costs with no spinning, best of five."""
    global SPINS
    SPINS, best = 0, float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(10_000):
            cpu_work(i)
        best = min(best, (time.perf_counter() - t0) * 1e6 / 10_000)
    return best


def cpu_work(x):
    spin(SPINS)
    return x


def grid_tasks(task_us, workers):
    """Tasks per round, as pool_bench.cc's grid_tasks."""
    return max(32 * workers, min(20000 // task_us, 2000))


def grid_workers():
    cpus = len(os.sched_getaffinity(0))
    out, w = [], 1
    while w < cpus:
        out.append(w)
        w *= 2
    out.append(cpus)
    if os.environ.get("MP_BENCH_QUICK") == "1":
        # run_all --quick keeps 1, 2 and every CPU of a grid (quick_grid).
        out = [n for n in out if n in (1, 2, cpus)]
    return out


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
    global SPINS
    rate, overhead = spins_per_us(), call_overhead_us()
    for task_us in (1, 50, 1000):
        # The call itself takes part of a 1 us task: spin for the rest.
        SPINS = max(0, round((task_us - overhead) * rate))
        for workers in grid_workers():
            with ctx.Pool(workers) as pool:
                work = list(range(grid_tasks(task_us, workers)))
                pool.map(cpu_work, work[:workers * 4], 1)  # warm up
                out.append(record(f"BM_Pool/cpython/cpu_work/{task_us}/{workers}",
                                  *timed(lambda: pool.map(cpu_work, work, 1), len(work),
                                         min_time)))
    emit(out)


if __name__ == "__main__":
    main()
