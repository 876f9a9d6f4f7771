#!/usr/bin/env python3
"""CPython peer for //benchmarks:pipe (standard library only).

BM_PipePingPong/cpython/1: 1-byte send_bytes/recv_bytes round trip through
a child over multiprocessing.Pipe() (fork start method).
BM_PipeStream/cpython/<size>: one-way send_bytes from a child over
Pipe(duplex=False), received with recv_bytes_into into a preallocated
buffer (CPython's cheapest receive), sizes 8 B .. 1 MiB as in the C++ suite.
Placement as in the C++ suite: stream ends pinned to two CPUs, ping-pong
left to the scheduler.
Prints Google Benchmark JSON to stdout; finishes well under 20 s
(MP_PEER_MIN_TIME seconds per benchmark, default 0.4).
"""
import multiprocessing as mproc
import time

from gbench_json import PinnedPair, emit, entry, min_time

SIZES = [8, 64, 512, 4096, 32768, 262144, 1048576]


def echo(conn, other_end):
    other_end.close()  # else the child's copy keeps EOF from ever arriving
    try:
        while True:
            conn.send_bytes(conn.recv_bytes())
    except EOFError:
        pass


def ping_pong(ctx, min_time):
    parent, child = ctx.Pipe()
    p = ctx.Process(target=echo, args=(child, parent))
    p.start()
    child.close()
    msg = b"x"
    for _ in range(200):  # warm up
        parent.send_bytes(msg)
        parent.recv_bytes()
    n, batch = 0, 500
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            parent.send_bytes(msg)
            parent.recv_bytes()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            break
    parent.close()
    p.join()
    return n, elapsed


def sender(conn, other_end, size, count, pinned):
    pinned.in_child()
    other_end.close()
    msg = b"m" * size
    conn.send_bytes(b"")  # ready: the parent starts its clock after this
    for _ in range(count):
        conn.send_bytes(msg)
    conn.close()


def stream_once(ctx, size, count):
    with PinnedPair() as pinned:
        return stream_once_pinned(ctx, size, count, pinned)


def stream_once_pinned(ctx, size, count, pinned):
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=sender, args=(w, r, size, count, pinned))
    p.start()
    w.close()
    buf = bytearray(size)
    r.recv_bytes()  # the child is running
    start = time.perf_counter()
    for _ in range(count):
        r.recv_bytes_into(buf)
    elapsed = time.perf_counter() - start
    r.close()
    p.join()
    return elapsed


def stream(ctx, size, min_time):
    count = 64
    while True:
        elapsed = stream_once(ctx, size, count)
        if elapsed >= min_time or count >= 1 << 24:
            return count, elapsed
        grow = min_time / max(elapsed, 1e-6) * 1.2
        count = int(count * min(max(grow, 2.0), 16.0))


def main():
    seconds = min_time("0.4")
    ctx = mproc.get_context("fork")
    benchmarks = []
    n, elapsed = ping_pong(ctx, seconds)
    benchmarks.append(entry("BM_PipePingPong/cpython/1", n, elapsed))
    for size in SIZES:
        n, elapsed = stream(ctx, size, seconds)
        benchmarks.append(entry(f"BM_PipeStream/cpython/{size}", n, elapsed, bytes_per_item=size))
    emit(benchmarks)


if __name__ == "__main__":
    main()
