#!/usr/bin/env python3
"""CPython peer for //benchmarks:queue: multiprocessing.Queue, one producer
process -> the measuring process, fork start method, payloads of 8 B, 64 B,
4 KiB, 64 KiB and 1 MiB (bytes objects). Names match the C++ benchmarks:
BM_Queue/cpython/<size>/real_time beside BM_Queue/mp/<size>/real_time.
Prints Google Benchmark-schema JSON on stdout; finishes well under 20 s."""
import multiprocessing as mproc
import os
import time

from gbench_json import emit, entry

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
        results.append(entry(f"BM_Queue/cpython/{size}/real_time", n, elapsed,
                             bytes_per_item=size))
    emit(results)


if __name__ == "__main__":
    main()
