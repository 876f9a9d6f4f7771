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
            ] + _DEPS.get(name, []),
        )

    for name in _PER_METHOD:
        for method in ["forkserver", "spawn"]:
            native.sh_test(
                name = name + "_" + method,
                srcs = ["with_start_method.sh"],
                args = ["$(location :" + name + ")", method],
                data = [":" + name] + _DATA.get(name, []),
                size = "medium",
            )

# Suites run again under each other start method, as CPython runs its whole
# _test_multiprocessing once per method. Their children are functions whose
# arguments travel (mp objects, encodable values); the few tests whose
# subject holds only in a fork of the caller (a closure, memory or an fd
# number inherited as of start) skip themselves (MP_FORK_ONLY in
# test_util.h).
_PER_METHOD = [
    "connection_test",
    "managers_test",
    "pool_test",
    "process_test",
    "queue_test",
    "shared_test",
    "synchronize_test",
]

_EXCLUSIVE = []

# Libraries beyond //lib/mp that a suite tests (their own targets).
_DEPS = {
    "managers_test": ["//lib/mp:managers"],
}

# Helper programs a suite runs (found under the test's runfiles).
_DATA = {
    "start_methods_test": [
        "//conformance:no_freeze_support",
        "//conformance:replaced_executable",
    ],
}
