"""Fake benchmark binaries and peer scripts for the tests of run_all and
bench_report: they speak enough of Google Benchmark's command line and JSON to
stand in for //benchmarks:<area> and benchmarks/peers/<area>_peer.py.

make_binary(dir, name, spec) writes an executable `dir/name` that, run with
Google Benchmark flags, lists its benchmarks, honours --benchmark_filter (as a
regex search), --benchmark_repetitions and --benchmark_out, prints console
lines, and records its argv. spec:
  benchmarks: [{"name": "BM_Queue/mp/8/real_time", "items_per_second": 1e6, ...}]
  mode: "ok" | "crash" (exit 3) | "hang" (forks a child, both sleep forever)
        | "orphan" (forks a child that outlives the binary, then exits 0)
  pidfile: where "hang"/"orphan" write the forked child's pid
  record: where to append the argv (one JSON list per line)
"""
import json
import os
import pathlib
import re
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def make_binary(directory, name, spec):
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(HERE)!r})\n"
                    f"import fake_bench\nfake_bench.binary_main({json.dumps(spec)!r})\n")
    path.chmod(0o755)
    return path


def make_peer(directory, stem, spec):
    """spec: {"benchmarks": [...], "mode": "ok" | "fail" | "garbage",
    "record": path to append env MP_BENCH_* as JSON}."""
    peers = pathlib.Path(directory) / "peers"
    peers.mkdir(parents=True, exist_ok=True)
    path = peers / f"{stem}.py"
    path.write_text(f"import sys\nsys.path.insert(0, {str(HERE)!r})\n"
                    f"import fake_bench\nfake_bench.peer_main({json.dumps(spec)!r})\n")
    return path


def _entry(b, rep, reps):
    ips = b.get("items_per_second")
    real = b.get("real_time") or (1e9 / ips if ips else 1000.0)
    e = {"name": b["name"], "run_name": b["name"], "run_type": "iteration",
         "repetitions": reps, "repetition_index": rep, "threads": 1,
         "iterations": 100, "real_time": real * (1 + 0.001 * rep),
         "cpu_time": real, "time_unit": "ns"}
    for k in ("items_per_second", "bytes_per_second"):
        if k in b:
            e[k] = b[k] * (1 - 0.001 * rep)
    if b.get("error"):
        e["error_occurred"] = True
        e["error_message"] = b["error"]
    return e


def _fork_sleeper(pidfile):
    pid = os.fork()
    if pid == 0:
        time.sleep(300)
        os._exit(0)
    tmp = pathlib.Path(str(pidfile) + ".tmp")
    tmp.write_text(str(pid))
    tmp.rename(pidfile)          # atomic: readers never see an empty file
    return pid


def binary_main(spec_json):
    spec = json.loads(spec_json)
    flags = {}
    for a in sys.argv[1:]:
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            flags[k] = v
        elif a.startswith("--"):
            flags[a[2:]] = "true"
    if spec.get("record"):
        with open(spec["record"], "a") as f:
            f.write(json.dumps(sys.argv[1:]) + "\n")
    names = [b["name"] for b in spec["benchmarks"]]
    if "benchmark_filter" in flags:
        rx = re.compile(flags["benchmark_filter"])
        selected = [b for b in spec["benchmarks"] if rx.search(b["name"])]
    else:
        selected = list(spec["benchmarks"])
    if flags.get("benchmark_list_tests") == "true":
        if not selected:
            print(f"Failed to match any benchmarks against regex: {flags.get('benchmark_filter')}")
        for b in selected:
            print(b["name"])
        return
    mode = spec.get("mode", "ok")
    if mode == "crash":
        sys.stderr.write("fake: crashing\n")
        sys.exit(3)
    if mode == "hang":
        _fork_sleeper(spec["pidfile"])
        time.sleep(300)
    if mode == "orphan":
        _fork_sleeper(spec["pidfile"])
    reps = int(flags.get("benchmark_repetitions", "1"))
    entries = []
    for b in selected:
        for rep in range(reps):
            e = _entry(b, rep, reps)
            entries.append(e)
            print(f"{b['name']:<40} {e['real_time']:10.0f} ns {e['cpu_time']:10.0f} ns  100", flush=True)
    if "benchmark_out" in flags:
        pathlib.Path(flags["benchmark_out"]).write_text(json.dumps(
            {"context": {"num_cpus": 2, "executable": sys.argv[0]}, "benchmarks": entries}))


def peer_main(spec_json):
    spec = json.loads(spec_json)
    if spec.get("record"):
        with open(spec["record"], "a") as f:
            f.write(json.dumps({k: v for k, v in os.environ.items()
                                if k.startswith(("MP_BENCH_", "MP_PEER_"))}) + "\n")
    mode = spec.get("mode", "ok")
    if mode == "fail":
        sys.exit(1)
    if mode == "garbage":
        print("this is not json")
        return
    print(json.dumps({"context": {"executable": "python3"},
                      "benchmarks": [_entry(b, 0, 1) for b in spec["benchmarks"]]}))


def result_set(directory, files):
    """Writes a result set: files = {stem: [entries]} (entries as for
    Google Benchmark JSON). Returns the directory."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stem, entries in files.items():
        (directory / f"{stem}.json").write_text(json.dumps({"context": {}, "benchmarks": entries}))
    return directory


def runs(name, values, field="items_per_second"):
    """Google Benchmark iteration entries, one per repetition, with `field`
    set to each of `values` (real_time consistent with items/s)."""
    return [{"name": name, "run_name": name, "run_type": "iteration",
             "repetitions": len(values), "repetition_index": i, "iterations": 10,
             "real_time": 1e9 / v, "cpu_time": 1e9 / v, "time_unit": "ns", field: v}
            for i, v in enumerate(values)]


def noisy_context(directory, suites, others=1.0):
    """Writes a context.json whose load samples (as run_all writes them)
    call `suites` noisy: other processes kept `others` cores busy."""
    directory = pathlib.Path(directory)
    reasons = [f"other processes kept {others:.2f} cores busy"]
    load = {"noisy": True, "reasons": [f"{s}: {reasons[0]}" for s in suites],
            "suites": {s: {"load_before": [2.0, 1.0, 1.0], "load_after": [3.0, 1.5, 1.0],
                           "governor_before": "none", "governor_after": "none",
                           "others_cores": others, "noisy": True, "reasons": reasons}
                       for s in suites}}
    (directory / "context.json").write_text(json.dumps(
        {"cpu": "test", "cores": 2, "run": {"notes": [], "load": load}}))
    return directory
