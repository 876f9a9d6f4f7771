#!/usr/bin/env python3
"""CPython peer of //benchmarks:manager: multiprocessing.Manager().

Prints Google Benchmark-schema JSON on stdout, with the names of the C++
benchmarks under the "cpython" prefix so reports can pair them:

  BM_ManagerRoundTrip/cpython/get   d[1] on a Manager().dict() (one round trip)
  BM_ManagerRoundTrip/cpython/set   d[1] = i
  BM_ManagerListAppend/cpython/1    Manager().list().append(i)

Standard library only; fork start method; finishes in a few seconds.
"""
import multiprocessing as mp
import time

from gbench_json import emit, entry, min_time


def measure(name, body, batch):
    """Runs body(batch) until min_time() passed; returns a benchmark record."""
    body(min(batch, 100))  # warm up: the connection is made on first use
    seconds = min_time(1.0)
    iterations = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    while True:
        body(batch)
        iterations += batch
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    return entry(name, iterations, elapsed, cpu=time.process_time() - cpu0)


def main():
    mp.set_start_method("fork")
    with mp.Manager() as manager:
        d = manager.dict()
        d[1] = 1
        lst = manager.list()

        def get(n):
            for _ in range(n):
                d[1]

        def set_(n):
            for i in range(n):
                d[1] = i

        def append(n):
            for i in range(n):
                lst.append(i)
            del lst[:]

        emit([
            measure("BM_ManagerRoundTrip/cpython/get", get, 1000),
            measure("BM_ManagerRoundTrip/cpython/set", set_, 1000),
            measure("BM_ManagerListAppend/cpython/1", append, 1000),
        ])


if __name__ == "__main__":
    main()
