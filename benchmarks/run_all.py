#!/usr/bin/env python3
"""bazel run //benchmarks:all — run every mp benchmark binary.

Writes Google Benchmark JSON, one file per binary, under
reports/runs/<timestamp>/ in the source tree, and prints a summary.
"""
import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def binaries():
    names = sorted(p.name[: -len("_bench.cc")] for p in HERE.glob("*_bench.cc"))
    return [(n, HERE / n) for n in names if (HERE / n).exists()]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--filter", default="", help="benchmark name regex")
    ap.add_argument("--quick", action="store_true", help="short run for CI")
    ap.add_argument("--repetitions", type=int, default=1)
    args = ap.parse_args()

    workspace = pathlib.Path(os.environ.get("BUILD_WORKSPACE_DIRECTORY", HERE.parent))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = workspace / "reports" / "runs" / stamp
    out.mkdir(parents=True, exist_ok=True)

    bins = binaries()
    for i, (name, path) in enumerate(bins, 1):
        print(f"[{i}/{len(bins)}] {name}", flush=True)
        cmd = [str(path), f"--benchmark_out={out / (name + '.json')}",
               "--benchmark_out_format=json",
               f"--benchmark_repetitions={args.repetitions}"]
        if args.filter:
            cmd.append(f"--benchmark_filter={args.filter}")
        if args.quick:
            cmd.append("--benchmark_min_time=0.05")
        subprocess.run(cmd, check=True)
    print(f"results: {out}")


if __name__ == "__main__":
    sys.exit(main())
