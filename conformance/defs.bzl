"""One cc_test per conformance source file."""

def conformance_tests(srcs):
    for src in srcs:
        name = src[:-len(".cc")]
        native.cc_test(
            name = name,
            srcs = [src, "test_util.h", "test_main.cc"],
            size = "medium",
            # Tests fork and time things; run them alone so timeouts are fair
            # on a 2-core machine.
            tags = ["exclusive"] if name in _EXCLUSIVE else [],
            data = _DATA.get(name, []),
            deps = [
                "//lib/mp",
                "@system//:gtest",
                "@system//:fmt",
            ],
        )

_EXCLUSIVE = []

# Helper programs a suite runs (found under the test's runfiles).
_DATA = {
    "start_methods_test": ["//conformance:no_freeze_support"],
}
