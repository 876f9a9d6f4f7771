#!/usr/bin/env python3
"""Count test *cases* (not targets) from a Bazel build-event JSON file.

Usage: count_tests.py BEP.json|REPORT.xml [...]
Prints per-file totals on stderr and the sum as `N passed, N failed` on
stdout. A test target that produced no test.xml (it did not build, crashed
before GoogleTest wrote its report, or timed out) counts as one failed case.
A .xml argument is a JUnit report written outside Bazel (tools/ci_consumers.sh
writes one); a missing or unreadable one counts as one failed case.
"""
import json
import sys
import xml.etree.ElementTree as ET


def cases_from_xml(path):
    passed = failed = skipped = 0
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None or case.get("result") == "skipped" \
                or case.get("status") == "notrun":
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def count(bep_path):
    passed = failed = skipped = 0
    seen_targets = set()
    expected_tests = set()
    with open(bep_path) as f:
        for line in f:
            ev = json.loads(line)
            eid = ev.get("id", {})
            if "targetCompleted" in eid:
                label = eid["targetCompleted"]["label"]
                completed = ev.get("completed", {})
                if completed.get("testSummary") is not None or "testSize" in completed:
                    expected_tests.add(label)
                if ev.get("aborted") is not None or completed.get("success") is False:
                    if label not in seen_targets and ("testSize" in completed or "_test" in label):
                        failed += 1
                        seen_targets.add(label)
            if "testResult" in eid:
                label = eid["testResult"]["label"]
                res = ev.get("testResult", {})
                xml = None
                for out in res.get("testActionOutput", []):
                    if out.get("name") == "test.xml":
                        xml = out.get("uri", "").replace("file://", "")
                seen_targets.add(label)
                status = res.get("status", "")
                try:
                    p, fl, s = cases_from_xml(xml) if xml else (0, 0, 0)
                except (OSError, ET.ParseError):
                    p, fl, s = 0, 0, 0
                if status != "PASSED" and fl == 0:
                    fl = 1  # crashed or timed out: the target failed as a whole
                passed, failed, skipped = passed + p, failed + fl, skipped + s
    return passed, failed, skipped


def count_junit(path):
    try:
        return cases_from_xml(path)
    except (OSError, ET.ParseError):
        return 0, 1, 0  # the step that should have written it did not finish


def main():
    total = [0, 0, 0]
    for path in sys.argv[1:]:
        p, f, s = count_junit(path) if path.endswith(".xml") else count(path)
        print(f"{path}: {p} passed, {f} failed, {s} skipped", file=sys.stderr)
        total = [total[0] + p, total[1] + f, total[2] + s]
    line = f"{total[0]} passed, {total[1]} failed"
    if total[2]:
        line += f", {total[2]} skipped"
    print(line)
    return 1 if total[1] else 0


if __name__ == "__main__":
    sys.exit(main())
