"""One Google Benchmark binary per <area>_bench.cc."""

def benchmark_binaries(srcs):
    for src in srcs:
        native.cc_binary(
            name = src[:-len("_bench.cc")],
            srcs = [src, "bench_util.h"],
            deps = [
                "//lib/mp",
                "@system//:benchmark",
                "@system//:fmt",
            ] + _DEPS.get(src[:-len("_bench.cc")], []),
        )

# Libraries beyond //lib/mp that a benchmark measures (their own targets).
_DEPS = {
    "manager": ["//lib/mp:managers"],
}
