#!/usr/bin/env python3
"""mpi4py peer for //benchmarks:mpi_pool: mpi4py.futures.MPIPoolExecutor on
the same ranks (mpirun -n 3: rank 0 submits, two workers) and the same
workloads as mpi_pool_bench.cc, noop(int) tasks: apply_async (10k submitted,
then gathered), apply (blocking round trip), map with chunksize 1 (10k), map
with its default chunksize (100k; mpi4py's default is 1), and 200 tasks of
1 ms busy work with chunksize 1. Prints Google Benchmark JSON
(BM_MpiPool/mpi4py/...); items_per_second counts tasks.

run_all runs this script with any python3: it starts itself again under
  mpirun -n 3 --oversubscribe PYTHON -m mpi4py.futures mpi_pool_peer.py
with an interpreter that has mpi4py (this one, else /usr/bin/python3, where
Debian's python3-mpi4py installs it). Without mpirun or mpi4py it prints no
benchmark and says why ("skipped")."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

RANKS = 3
INNER = "MP_MPI_PEER_OUT"   # set for the run under mpirun: where rank 0 writes its JSON


def noop(x):
    return x


def busy_1ms(x):
    until = time.perf_counter() + 0.001
    while time.perf_counter() < until:
        pass
    return x


def inner(out_path):
    """Rank 0 under `python -m mpi4py.futures`: the other ranks are workers."""
    from mpi4py.futures import MPIPoolExecutor
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    from gbench_json import entry, emit, timed   # noqa: E402

    min_time = float(os.environ.get("MP_PEER_MIN_TIME", "0.3"))
    out = []

    def record(name, calls, elapsed, items):
        out.append(entry(f"BM_MpiPool/mpi4py/{name}", calls, elapsed, items=items))

    with MPIPoolExecutor() as ex:
        list(ex.map(noop, range(100)))   # warm up: every worker started
        n = 10000

        def apply_async():
            fs = [ex.submit(noop, i) for i in range(n)]
            for f in fs:
                f.result()

        record("apply_async", *timed(apply_async, n, min_time))

        def apply():
            for i in range(100):
                ex.submit(noop, i).result()

        record("apply", *timed(apply, 100, min_time))
        items = list(range(n))
        record("map_chunk1", *timed(lambda: list(ex.map(noop, items, chunksize=1)), n, min_time))
        # mpi4py sends one message per item (its default chunksize is 1): 100k
        # items take ~20 s on 2 cores, so a quick run uses 10k.
        big = list(range(10000 if os.environ.get("MP_BENCH_QUICK") else 100000))
        record("map_default", *timed(lambda: list(ex.map(noop, big)), len(big), min_time))
        work = list(range(200))
        record("work1ms", *timed(lambda: list(ex.map(busy_1ms, work, chunksize=1)), len(work),
                                 min_time))
    with open(out_path, "w") as f:
        saved, sys.stdout = sys.stdout, f
        try:
            emit(out)
        finally:
            sys.stdout = saved


def python_with_mpi4py():
    for py in (sys.executable, "/usr/bin/python3"):
        if py and os.path.exists(py) and subprocess.run(
                [py, "-c", "import mpi4py.futures"], capture_output=True).returncode == 0:
            return py
    return None


def skipped(why):
    print(f"mpi_pool_peer: {why}", file=sys.stderr)
    json.dump({"context": {}, "benchmarks": [], "skipped": why}, sys.stdout)
    print()


def launch():
    mpirun = shutil.which("mpirun")
    if not mpirun:
        return skipped("mpirun not found: install openmpi-bin (tools/setup.sh)")
    py = python_with_mpi4py()
    if not py:
        return skipped("no python3 with mpi4py: install python3-mpi4py (tools/setup.sh)")
    cmd = [mpirun, "-n", str(RANKS), "--oversubscribe"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    with tempfile.TemporaryDirectory(prefix="mp-mpi-peer.") as tmp:
        out_path = os.path.join(tmp, "peer.json")
        env = dict(os.environ, **{INNER: out_path})
        cmd += [py, "-m", "mpi4py.futures", os.path.abspath(__file__)]
        r = subprocess.run(cmd, env=env, stdout=sys.stderr)
        if r.returncode != 0 or not os.path.exists(out_path):
            print(f"mpi_pool_peer: {' '.join(cmd)} exited {r.returncode}", file=sys.stderr)
            return 1
        with open(out_path) as f:
            sys.stdout.write(f.read())
    return 0


if __name__ == "__main__":
    if os.environ.get(INNER):
        inner(os.environ[INNER])
    else:
        sys.exit(launch() or 0)
