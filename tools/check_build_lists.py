#!/usr/bin/env python3
"""Fail when the Bazel and the CMake build compile different files.

Usage: check_build_lists.py [--bazel-xml FILE] [--cmake-build DIR]

Both builds glob their sources (lib/mp/BUILD, conformance/defs.bzl,
benchmarks/defs.bzl; CMakeLists.txt), so a new file normally needs no edit in
either. What can drift is the rest: a glob pattern changed in one build only,
a file listed by hand in one (test_util.h, bench_util.h, test_main.cc), a
target added to one. This script compares what each build actually has, per
target, after the globs are expanded:

  Bazel   `bazel query --output=xml` of the cc rules in //lib/..., //conformance/...
          and //benchmarks/... (srcs + hdrs), or the XML given with --bazel-xml;
  CMake   the sources of each target in CMake's file API (codemodel v2) reply,
          from a configure of this tree with the tests and benchmarks on, into
          a temporary directory, or the build directory given with --cmake-build
          (one configured after a query for codemodel-v2 was written).

Targets pair by name: //lib/mp:mp with mp, //conformance:<area>_test with
<area>_test, //benchmarks:<area> with <area>_bench. A target in one build and
not the other, or a file in one target's list and not its partner's, is a
mismatch: each is printed and the exit status is 1.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parents[1]

BAZEL_QUERY = 'kind("cc_(library|binary|test)", //lib/... + //conformance/... + //benchmarks/...)'

# Bazel package -> how its targets are named in CMake.
PACKAGES = {
    "lib/mp": lambda name: name,
    "conformance": lambda name: name,
    "benchmarks": lambda name: name + "_bench",
}

# The CMake target types that compile sources (not UTILITY or INTERFACE).
_CMAKE_KINDS = {"STATIC_LIBRARY", "SHARED_LIBRARY", "OBJECT_LIBRARY", "MODULE_LIBRARY", "EXECUTABLE"}


def label_to_path(label):
    """//lib/mp:internal/shm.cc -> lib/mp/internal/shm.cc; None if external."""
    if not label.startswith("//"):
        return None
    package, _, name = label[2:].partition(":")
    return f"{package}/{name}" if package else name


def bazel_targets(query_xml):
    """{cmake-name: set of repo-relative files} from `bazel query --output=xml`."""
    targets = {}
    for rule in ET.fromstring(query_xml).iter("rule"):
        label = rule.get("name", "")
        package, _, name = label[2:].partition(":")
        if package not in PACKAGES:
            continue
        files = set()
        for lst in rule.iter("list"):
            if lst.get("name") in ("srcs", "hdrs", "textual_hdrs"):
                for lab in lst.iter("label"):
                    path = label_to_path(lab.get("value", ""))
                    if path:
                        files.add(path)
        targets[PACKAGES[package](name)] = files
    return targets


def cmake_targets(build_dir, source_dir=ROOT):
    """{target name: set of source-relative files} from a CMake file API reply."""
    reply = pathlib.Path(build_dir) / ".cmake" / "api" / "v1" / "reply"
    indexes = sorted(reply.glob("index-*.json"))
    if not indexes:
        raise FileNotFoundError(f"no CMake file API reply in {reply}")
    index = json.loads(indexes[-1].read_text())
    codemodel_file = next(o["jsonFile"] for o in index["objects"] if o["kind"] == "codemodel")
    codemodel = json.loads((reply / codemodel_file).read_text())
    source_dir = pathlib.Path(codemodel.get("paths", {}).get("source", source_dir))
    targets = {}
    for t in codemodel["configurations"][0]["targets"]:
        target = json.loads((reply / t["jsonFile"]).read_text())
        if target.get("type") not in _CMAKE_KINDS:
            continue
        files = set()
        for s in target.get("sources", []):
            if s.get("isGenerated"):
                continue
            path = pathlib.Path(s["path"])
            if path.is_absolute():
                try:
                    path = path.relative_to(source_dir)
                except ValueError:
                    continue  # outside the tree: not one of mp's files
            files.add(path.as_posix())
        targets[target["name"]] = files
    return targets


def compare(bazel, cmake):
    """The mismatches between two {target: files} maps, as printable lines."""
    problems = []
    for name in sorted(set(bazel) - set(cmake)):
        problems.append(f"target {name}: in Bazel, not in CMake")
    for name in sorted(set(cmake) - set(bazel)):
        problems.append(f"target {name}: in CMake, not in Bazel")
    for name in sorted(set(bazel) & set(cmake)):
        for f in sorted(bazel[name] - cmake[name]):
            problems.append(f"target {name}: {f} is in Bazel's list, not in CMake's")
        for f in sorted(cmake[name] - bazel[name]):
            problems.append(f"target {name}: {f} is in CMake's list, not in Bazel's")
    return problems


def query_bazel():
    return subprocess.run(["bazel", "query", "--output=xml", BAZEL_QUERY], cwd=ROOT, check=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout


def configure_cmake(build_dir):
    query = pathlib.Path(build_dir) / ".cmake" / "api" / "v1" / "query"
    query.mkdir(parents=True, exist_ok=True)
    (query / "codemodel-v2").touch()
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir),
                    "-DMP_BUILD_TESTS=ON", "-DMP_BUILD_BENCHMARKS=ON"],
                   check=True, stdout=subprocess.DEVNULL)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bazel-xml", help="`bazel query --output=xml` output (default: run it)")
    ap.add_argument("--cmake-build", help="a configured CMake build directory with a codemodel-v2 "
                    "reply (default: configure into a temporary directory)")
    args = ap.parse_args(argv)

    query_xml = pathlib.Path(args.bazel_xml).read_bytes() if args.bazel_xml else query_bazel()
    tmp = None
    build_dir = args.cmake_build
    if not build_dir:
        tmp = build_dir = tempfile.mkdtemp(prefix="mp-check-lists-")
        configure_cmake(build_dir)
    try:
        bazel, cmake = bazel_targets(query_xml), cmake_targets(build_dir)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    problems = compare(bazel, cmake)
    if not bazel:
        problems.append("Bazel lists no targets: the query matched nothing")
    for p in problems:
        print(f"check_build_lists: {p}", file=sys.stderr)
    if problems:
        print(f"check_build_lists: Bazel and CMake disagree ({len(problems)} mismatches)")
        return 1
    files = sum(len(f) for f in bazel.values())
    print(f"check_build_lists: Bazel and CMake agree ({len(bazel)} targets, {files} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
