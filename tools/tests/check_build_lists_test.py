"""tools/check_build_lists.py, the CI check that Bazel and CMake build the
same files, fed a Bazel query and a CMake file API reply that agree, and
mismatches of each kind: a file only one build globs, a target only one build
has. Each mismatch must fail the check (exit status 1) and name the file."""
import contextlib
import io
import json
import os
import pathlib
import sys
import tempfile
import unittest

ROOT = pathlib.Path(os.path.abspath(__file__)).parents[2]
sys.path.insert(0, str(ROOT))
from tools import check_build_lists as cbl  # noqa: E402
from tools.tests import testmain            # noqa: E402

LIB = ["lib/mp/os.cc", "lib/mp/os.h", "lib/mp/internal/shm.cc", "lib/mp/internal/shm.h"]
TEST = ["conformance/os_test.cc", "conformance/test_util.h", "conformance/test_main.cc"]
BENCH = ["benchmarks/spawn_bench.cc", "benchmarks/bench_util.h"]


def label(path):
    """lib/mp/internal/shm.cc -> //lib/mp:internal/shm.cc (packages as in mp)."""
    package = "lib/mp" if path.startswith("lib/mp/") else path.split("/")[0]
    return f"//{package}:{path[len(package) + 1:]}"


def bazel_xml(lib=LIB, test=TEST, bench=BENCH):
    """`bazel query --output=xml` as mp's three packages would answer it."""
    def rule(cls, name, files, deps=()):
        srcs = "".join(f'<label value="{label(f)}"/>' for f in files)
        dep = "".join(f'<label value="{d}"/>' for d in deps)
        return (f'<rule class="{cls}" name="{name}"><list name="srcs">{srcs}</list>'
                f'<list name="deps">{dep}</list></rule>')
    body = rule("cc_library", "//lib/mp:mp", lib, deps=["@system//:fmt"])
    if test is not None:
        body += rule("cc_test", "//conformance:os_test", test, deps=["//lib/mp:mp"])
    if bench is not None:
        body += rule("cc_binary", "//benchmarks:spawn", bench)
    return f'<?xml version="1.1"?><query version="2">{body}</query>'.encode()


def write_reply(build_dir, source_dir, targets):
    """A CMake file API codemodel-v2 reply with {name: (type, [paths])}."""
    reply = pathlib.Path(build_dir) / ".cmake" / "api" / "v1" / "reply"
    reply.mkdir(parents=True)
    entries = []
    for i, (name, (kind, paths)) in enumerate(targets.items()):
        fname = f"target-{name}-{i}.json"
        (reply / fname).write_text(json.dumps(
            {"name": name, "type": kind, "sources": [{"path": p} for p in paths]}))
        entries.append({"name": name, "jsonFile": fname})
    (reply / "codemodel-v2-1.json").write_text(json.dumps(
        {"paths": {"source": str(source_dir), "build": str(build_dir)},
         "configurations": [{"name": "Release", "targets": entries}]}))
    (reply / "index-1.json").write_text(json.dumps(
        {"objects": [{"kind": "codemodel", "jsonFile": "codemodel-v2-1.json"}]}))


def cmake_reply(lib=LIB, test=TEST, bench=BENCH, extra=None):
    targets = {"mp": ("STATIC_LIBRARY", lib)}
    if test is not None:
        targets["os_test"] = ("EXECUTABLE", test)
    if bench is not None:
        targets["spawn_bench"] = ("EXECUTABLE", bench)
    targets["ALL_BUILD_like"] = ("UTILITY", ["CMakeLists.txt"])
    targets.update(extra or {})
    return targets


class CheckBuildListsTest(unittest.TestCase):
    def run_check(self, xml, targets):
        with tempfile.TemporaryDirectory() as tmp:
            xml_path = pathlib.Path(tmp) / "query.xml"
            xml_path.write_bytes(xml)
            build = pathlib.Path(tmp) / "build"
            write_reply(build, "/src/mp", targets)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = cbl.main(["--bazel-xml", str(xml_path), "--cmake-build", str(build)])
            return rc, out.getvalue() + err.getvalue()

    def test_agreeing_builds_pass(self):
        rc, text = self.run_check(bazel_xml(), cmake_reply())
        self.assertEqual(rc, 0, text)
        self.assertIn("agree (3 targets, 9 files)", text)

    def test_source_globbed_by_bazel_only_fails(self):
        rc, text = self.run_check(bazel_xml(lib=LIB + ["lib/mp/internal/new.cc"]), cmake_reply())
        self.assertEqual(rc, 1)
        self.assertIn("target mp: lib/mp/internal/new.cc is in Bazel's list, not in CMake's", text)

    def test_header_listed_by_cmake_only_fails(self):
        rc, text = self.run_check(bazel_xml(), cmake_reply(bench=BENCH + ["benchmarks/extra.h"]))
        self.assertEqual(rc, 1)
        self.assertIn("target spawn_bench: benchmarks/extra.h is in CMake's list, not in Bazel's",
                      text)

    def test_hand_listed_file_missing_in_cmake_fails(self):
        rc, text = self.run_check(bazel_xml(), cmake_reply(test=TEST[:2]))  # no test_main.cc
        self.assertEqual(rc, 1)
        self.assertIn("os_test: conformance/test_main.cc is in Bazel's list", text)

    def test_suite_missing_in_cmake_fails(self):
        rc, text = self.run_check(bazel_xml(), cmake_reply(test=None))
        self.assertEqual(rc, 1)
        self.assertIn("target os_test: in Bazel, not in CMake", text)

    def test_target_only_in_cmake_fails(self):
        rc, text = self.run_check(bazel_xml(bench=None), cmake_reply())
        self.assertEqual(rc, 1)
        self.assertIn("target spawn_bench: in CMake, not in Bazel", text)

    def test_absolute_cmake_paths_are_made_relative_and_outside_files_ignored(self):
        lib = ["/src/mp/" + f for f in LIB] + ["/usr/include/fmt/core.h"]
        rc, text = self.run_check(bazel_xml(), cmake_reply(lib=lib))
        self.assertEqual(rc, 0, text)

    def test_empty_query_fails(self):
        rc, text = self.run_check(b'<?xml version="1.1"?><query version="2"></query>', {})
        self.assertEqual(rc, 1)
        self.assertIn("query matched nothing", text)

    def test_labels(self):
        self.assertEqual(cbl.label_to_path("//lib/mp:internal/shm.cc"), "lib/mp/internal/shm.cc")
        self.assertIsNone(cbl.label_to_path("@system//:fmt"))


if __name__ == "__main__":
    testmain.main()
