#!/usr/bin/env python3
"""CPython peer for //benchmarks:threading: threading.Thread(target=noop)
start+join. Prints Google Benchmark JSON."""
import threading
import time

from gbench_json import emit, entry, min_time


def noop():
    pass


def measure(min_time):
    n = 0
    start = time.perf_counter()
    while True:
        for _ in range(100):
            t = threading.Thread(target=noop)
            t.start()
            t.join()
        n += 100
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return n, elapsed


def main():
    n, elapsed = measure(min_time("0.5"))
    emit([entry("BM_Thread/cpython/start_join", n, elapsed)])


if __name__ == "__main__":
    main()
