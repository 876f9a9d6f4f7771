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
            deps = [
                "//lib/mp",
                "@system//:gtest",
                "@system//:fmt",
            ],
        )

_EXCLUSIVE = []
