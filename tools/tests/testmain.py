"""Runs a test module's unittest cases and, under `bazel test`, writes one
JUnit <testcase> per test to $XML_OUTPUT_FILE, so .ci/run's count of test
cases (tools/count_tests.py) counts each Python test, not each target."""
import os
import sys
import time
import unittest
import xml.etree.ElementTree as ET


class _Result(unittest.TextTestResult):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.cases = []             # (test id, seconds, kind or None, text)
        self._t0 = 0.0

    def startTest(self, test):
        self._t0 = time.monotonic()
        super().startTest(test)

    def _add(self, test, kind, text=""):
        self.cases.append((test.id(), time.monotonic() - self._t0, kind, text))

    def addSuccess(self, test):
        super().addSuccess(test)
        self._add(test, None)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._add(test, "failure", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._add(test, "error", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._add(test, "skipped", reason)


def _write_xml(path, name, cases):
    suite = ET.Element("testsuite", name=name, tests=str(len(cases)),
                       failures=str(sum(c[2] == "failure" for c in cases)),
                       errors=str(sum(c[2] == "error" for c in cases)))
    for test_id, secs, kind, text in cases:
        cls, _, meth = test_id.rpartition(".")
        case = ET.SubElement(suite, "testcase", classname=cls, name=meth, time=f"{secs:.3f}")
        if kind:
            el = ET.SubElement(case, kind, message=text.splitlines()[-1] if text else "")
            el.text = text
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def main(module_name="__main__"):
    module = sys.modules[module_name]
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    runner = unittest.TextTestRunner(verbosity=2, resultclass=_Result)
    result = runner.run(suite)
    xml_path = os.environ.get("XML_OUTPUT_FILE")
    if xml_path:
        _write_xml(xml_path, os.path.basename(sys.argv[0]), result.cases)
    sys.exit(0 if result.wasSuccessful() else 1)
