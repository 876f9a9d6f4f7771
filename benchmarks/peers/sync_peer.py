#!/usr/bin/env python3
"""CPython peer of //benchmarks:sync: multiprocessing.Lock, Semaphore, Event.

Prints Google Benchmark-schema JSON on stdout, with the names of the C++
benchmarks under the "cpython" prefix so reports can pair them:

  BM_Lock/cpython/uncontended   Lock.acquire()+release() by one process
  BM_Lock/cpython/contended/P   P processes hammer one Lock, P = 1, 2, 4, ...
                                up to the usable CPUs (items = every process's pairs)
  BM_Semaphore/cpython/uncontended  Semaphore(1).acquire()+release()
  BM_Event/cpython/pingpong     set -> wait -> set back between two processes

Standard library only; fork start method; finishes in well under 20 s.
"""
import multiprocessing as mp
import os
import sys
import time

from gbench_json import emit, entry, min_time

# Seconds per workload: 1, or MP_PEER_MIN_TIME (run_all --quick) but at least 0.25.
RUN_SECONDS = max(0.25, min_time(1.0))


def measure(name, body, batch):
    """Runs body(batch) until RUN_SECONDS passed; returns a benchmark record."""
    body(min(batch, 1000))  # warm up
    iterations = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    while True:
        body(batch)
        iterations += batch
        elapsed = time.perf_counter() - t0
        if elapsed >= RUN_SECONDS:
            break
    return entry(name, iterations, elapsed, cpu=time.process_time() - cpu0)


def lock_uncontended():
    lock = mp.Lock()

    def body(n):
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            release()

    return measure("BM_Lock/cpython/uncontended", body, 100_000)


def semaphore_uncontended():
    sem = mp.Semaphore(1)

    def body(n):
        acquire, release = sem.acquire, sem.release
        for _ in range(n):
            acquire()
            release()

    return measure("BM_Semaphore/cpython/uncontended", body, 100_000)


def _hammer(lock, ready, go, stop, counts, index):
    ready.release()
    go.wait()
    n = 0
    acquire, release = lock.acquire, lock.release
    while not stop.is_set():
        for _ in range(100):
            acquire()
            release()
        n += 100
    counts[index] = n


def lock_contended(processes):
    """As sync_bench.cc's contended/P: this process and P-1 helpers; the
    helpers start on `go` and count their own pairs until `stop`."""
    lock, ready, go, stop = mp.Lock(), mp.Semaphore(0), mp.Event(), mp.Event()
    counts = mp.Array("q", processes, lock=False)
    helpers = [mp.Process(target=_hammer, args=(lock, ready, go, stop, counts, i))
               for i in range(1, processes)]
    for h in helpers:
        h.start()
    for _ in helpers:
        ready.acquire()
    acquire, release = lock.acquire, lock.release
    iterations = 0
    go.set()
    t0 = time.perf_counter()
    try:
        while True:
            for _ in range(1000):
                acquire()
                release()
            iterations += 1000
            elapsed = time.perf_counter() - t0
            if elapsed >= RUN_SECONDS:
                break
    finally:
        stop.set()
        for h in helpers:
            h.join()
    return entry(f"BM_Lock/cpython/contended/{processes}/real_time", iterations, elapsed,
                 items=iterations + sum(counts))


def process_counts():
    cpus = len(os.sched_getaffinity(0))
    out, p = [], 1
    while p < cpus:
        out.append(p)
        p *= 2
    out.append(cpus)
    if os.environ.get("MP_BENCH_QUICK") == "1":
        # run_all --quick keeps 1, 2 and every CPU of a grid (quick_grid).
        out = [n for n in out if n in (1, 2, cpus)]
    return out


def _pong(ping, pong, stop):
    while True:
        ping.wait()
        ping.clear()
        if stop.is_set():
            return
        pong.set()


def event_pingpong():
    ping, pong, stop = mp.Event(), mp.Event(), mp.Event()
    helper = mp.Process(target=_pong, args=(ping, pong, stop))
    helper.start()

    def body(n):
        for _ in range(n):
            ping.set()
            pong.wait()
            pong.clear()

    try:
        rec = measure("BM_Event/cpython/pingpong/real_time", body, 200)
    finally:
        stop.set()
        ping.set()
        helper.join()
    return rec


def main():
    mp.set_start_method("fork")
    benchmarks = [lock_uncontended()]
    benchmarks += [lock_contended(p) for p in process_counts()]
    benchmarks += [semaphore_uncontended(), event_pingpong()]
    emit(benchmarks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
