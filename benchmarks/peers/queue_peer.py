#!/usr/bin/env python3
"""CPython peer for //benchmarks:queue: multiprocessing.Queue, one producer
process -> the measuring process, fork start method, payloads of 8 B, 64 B,
4 KiB, 64 KiB and 1 MiB (bytes objects). Names match the C++ benchmarks:
BM_Queue/cpython/<size>/real_time beside BM_Queue/mp/<size>/real_time.
Prints Google Benchmark-schema JSON on stdout; finishes well under 20 s."""
import json
import multiprocessing as mproc
import os
import platform
import sys
import time

# Items per size: about half a second each at CPython's usual rates
# (150k/s small, 100/s at 1 MiB), scaled by MP_PEER_SCALE.
COUNTS = {8: 60000, 64: 60000, 4096: 40000, 65536: 4000, 1 << 20: 60}


def produce(q, payload, n):
    for _ in range(n + 1):
        q.put(payload)


def measure(ctx, size, scale):
    n = max(10, int(COUNTS[size] * scale))
    q = ctx.Queue()
    p = ctx.Process(target=produce, args=(q, b"m" * size, n))
    p.start()
    q.get()  # warm up: the producer runs and its feeder thread streams
    got = 0
    start = time.perf_counter()
    for _ in range(n):
        got += len(q.get())
    elapsed = time.perf_counter() - start
    p.join()
    q.close()
    assert got == n * size
    return n, elapsed


def main():
    scale = float(os.environ.get("MP_PEER_SCALE", "1"))
    ctx = mproc.get_context("fork")
    results = []
    for size in COUNTS:
        n, elapsed = measure(ctx, size, scale)
        per = elapsed / n * 1e9
        name = f"BM_Queue/cpython/{size}/real_time"
        results.append({
            "name": name, "run_name": name, "run_type": "iteration",
            "repetitions": 1, "repetition_index": 0, "iterations": n,
            "real_time": per, "cpu_time": per, "time_unit": "ns",
            "items_per_second": n / elapsed, "bytes_per_second": n * size / elapsed,
        })
    out = {
        "context": {"executable": sys.executable, "python": platform.python_version(),
                    "num_cpus": os.cpu_count()},
        "benchmarks": results,
    }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
