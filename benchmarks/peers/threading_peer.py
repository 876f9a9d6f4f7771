#!/usr/bin/env python3
"""CPython peer for //benchmarks:threading: threading.Thread(target=noop)
start+join. Prints Google Benchmark JSON."""
import json
import os
import platform
import sys
import threading
import time


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
    min_time = float(os.environ.get("MP_PEER_MIN_TIME", "0.5"))
    n, elapsed = measure(min_time)
    per = elapsed / n * 1e9
    name = "BM_Thread/cpython/start_join"
    out = {
        "context": {"executable": sys.executable, "python": platform.python_version(),
                    "num_cpus": os.cpu_count()},
        "benchmarks": [{
            "name": name, "run_name": name,
            "run_type": "iteration", "repetitions": 1, "repetition_index": 0,
            "iterations": n, "real_time": per, "cpu_time": per, "time_unit": "ns",
            "items_per_second": n / elapsed,
        }],
    }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
