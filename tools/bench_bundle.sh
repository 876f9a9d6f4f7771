#!/usr/bin/env bash
# tools/bench_bundle.sh OUTDIR — everything `bazel run //benchmarks:all` runs,
# in one directory that runs on another x86-64 Linux machine with python3 and
# nothing else installed (no Bazel, no -dev packages):
#
#   OUTDIR/run_all.sh            runs the benchmarks there (arguments as for
#                                //benchmarks:all; give --label NAME)
#   OUTDIR/benchmarks/           the binaries, their shared libraries (lib/,
#                                copied by ../shared/tools/bundle-binaries.sh),
#                                the CPython peers, goals.json, run_all.py,
#                                BUNDLE.json (the commit and compiler they
#                                were built from)
#   OUTDIR/tools/                the report tools run_all uses
#
# Results land in OUTDIR/reports/runs/<timestamp>-<label>/; copy that
# directory into this checkout's reports/runs/ and it sits beside this
# machine's runs in bench_report and bench_history (reports/README.md, "On
# another machine").
#
# Environment: MP_BUNDLE_TOOL (default ../shared/tools/bundle-binaries.sh from
# the project root) copies binaries with their libraries; MP_BUNDLE_NO_BUILD=1
# skips the `bazel build` (the binaries must be in bazel-bin/ already).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/bench_bundle.sh OUTDIR}
tool=${MP_BUNDLE_TOOL:-../shared/tools/bundle-binaries.sh}
if [[ ! -x $tool && ! -f $tool ]]; then
  echo "bench_bundle: no bundling tool at $tool (set MP_BUNDLE_TOOL)" >&2
  exit 2
fi

areas=()
for src in benchmarks/*_bench.cc; do
  a=$(basename "$src" _bench.cc)
  areas+=("$a")
done
if [[ ${MP_BUNDLE_NO_BUILD:-0} != 1 ]]; then
  bazel build --config=ci --ui_event_filters=-info --noshow_progress \
    "${areas[@]/#/\/\/benchmarks:}"
fi
bins=()
for a in "${areas[@]}"; do bins+=("bazel-bin/benchmarks/$a"); done

rm -rf "$out"
mkdir -p "$out/benchmarks/peers" "$out/tools"
bash "$tool" "$out/benchmarks" "${bins[@]}" >/dev/null
cp benchmarks/run_all.py benchmarks/goals.json "$out/benchmarks/"
cp benchmarks/peers/*.py "$out/benchmarks/peers/"
cp tools/bench_lib.py tools/bench_report.py tools/bench_stats.py tools/bench_html.py \
  tools/bench_plots.py "$out/tools/"

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then commit+="-dirty"; fi
compiler=$(readelf -p .comment "${bins[0]}" 2>/dev/null | grep -o 'GCC: .*\|clang version .*' \
  | tail -1 || true)
python3 - "$out/benchmarks/BUNDLE.json" "$commit" "${compiler:-unknown}" <<'PY'
import datetime, json, platform, sys
path, commit, compiler = sys.argv[1:4]
json.dump({"git_commit": commit, "compiler": compiler.strip(), "built_on": platform.node(),
           "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
          open(path, "w"), indent=1)
PY

cat > "$out/run_all.sh" <<'RUN'
#!/usr/bin/env bash
# run_all.sh [--label NAME] [run_all flags] — the benchmarks of this bundle,
# with its shared libraries; results in reports/runs/ next to this script.
d=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$d/benchmarks/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec python3 "$d/benchmarks/run_all.py" "$@"
RUN
chmod +x "$out/run_all.sh"
echo "bench_bundle: $out ($(du -sh "$out" | cut -f1)); on the other machine:"
echo "  $out/run_all.sh --label <machine> [--quick] [--repetitions 5]"
