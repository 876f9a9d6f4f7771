#!/usr/bin/env python3
"""CPython peer of //benchmarks:sync: multiprocessing.Lock, Semaphore, Event.

Prints Google Benchmark-schema JSON on stdout, with the names of the C++
benchmarks under the "cpython" prefix so reports can pair them:

  BM_Lock/cpython/uncontended   Lock.acquire()+release() by one process
  BM_Lock/cpython/contended     the same while a forked process hammers it
  BM_Semaphore/cpython/uncontended  Semaphore(1).acquire()+release()
  BM_Event/cpython/pingpong     set -> wait -> set back between two processes

Standard library only; fork start method; finishes in well under 20 s.
"""
import multiprocessing as mp
import sys
import time

from gbench_json import emit, entry

RUN_SECONDS = 1.0


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


def _hammer(lock, ready, stop):
    ready.set()
    while not stop.is_set():
        for _ in range(100):
            lock.acquire()
            lock.release()


def lock_contended():
    lock, ready, stop = mp.Lock(), mp.Event(), mp.Event()
    helper = mp.Process(target=_hammer, args=(lock, ready, stop))
    helper.start()
    ready.wait()

    def body(n):
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            release()

    try:
        rec = measure("BM_Lock/cpython/contended/real_time", body, 20_000)
    finally:
        stop.set()
        helper.join()
    return rec


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
    benchmarks = [lock_uncontended(), lock_contended(), semaphore_uncontended(),
                  event_pingpong()]
    emit(benchmarks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
