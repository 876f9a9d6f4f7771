#!/usr/bin/env bash
# Runs a conformance suite with another default start method:
#   with_start_method.sh <suite binary> <method>
# (conformance/defs.bzl's _PER_METHOD). GoogleTest writes its per-case
# results where Bazel asks (XML_OUTPUT_FILE), as the suite itself would.
set -eu
bin="$1"
method="$2"
shift 2
exec "$bin" --start_method="$method" "$@"
