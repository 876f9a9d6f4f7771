#!/usr/bin/env bash
# A target that cannot travel to a spawn or forkserver child does not
# compile with mp::Context::Process, and the error says why; a type that
# cannot travel (a pointer, reference or view at any depth of a memcpy'd
# struct, a view through a transport) does not compile with the codec,
# Queue, Pool, Connection or Process, and the error names the culprit the
# same way everywhere. Case 0 is the control: the same file compiles when
# everything can travel.
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
expect_error 3 "NotEncodable<NotEncodable"
expect_error 4 "NotEncodable<WithPointer, int*>"
expect_error 4 "holds a field that cannot travel"
expect_error 5 "NotEncodable<WithView, std::basic_string_view<char"
expect_error 6 "NotEncodable<OuterOfSpan, std::span<const int"
expect_error 7 "NotEncodable<std::basic_string_view<char"
expect_error 7 "cannot travel through a Queue, Pool, Connection or Process"
expect_error 8 "NotEncodable<Job, const char*>"
expect_error 9 "NotEncodable<Job, const char*>"
expect_error 10 "NotEncodable<Job, const char*>"
expect_error 11 "NotEncodable<Job, const char*>"
expect_error 12 "NotEncodable<Job, const char*>"
expect_error 13 "NotEncodable<Job, const char*>"
expect_error 14 "NotEncodable<std::basic_string_view<char"
exit $fail
