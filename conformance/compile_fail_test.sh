#!/usr/bin/env bash
# A target that cannot travel to a spawn or forkserver child does not
# compile with mp::Context::Process, and the error says why. Case 0 is the
# control: the same file compiles when the target can travel.
set -u
here="${TEST_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}/${TEST_WORKSPACE:-mp}"
src="$here/conformance/compile_fail.cc"
inc="$here/lib"
CXX="${CXX:-g++}"
fail=0

compile() {  # case -> compiler output; status of the compile
  "$CXX" -std=c++20 -fsyntax-only -I"$inc" -DCASE="$1" "$src" 2>&1
}

if ! out=$(compile 0); then
  echo "FAIL: the control case does not compile:"; echo "$out" | head -20; fail=1
else
  echo "ok: control compiles"
fi

expect_error() {  # case, text the error must contain
  if out=$(compile "$1"); then
    echo "FAIL: case $1 compiled"; fail=1
  elif ! grep -qF -- "$2" <<<"$out"; then
    echo "FAIL: case $1 failed without saying: $2"; echo "$out" | grep -m5 error; fail=1
  else
    echo "ok: case $1 rejected: $2"
  fi
}
expect_error 1 "the target must be a function or a lambda without captures"
expect_error 2 "the target must be a function or a lambda without captures"
expect_error 3 "every argument must be encodable"
exit $fail
