#!/usr/bin/env bash
# The headline benchmarks of BENCHMARKS.md's Summary, one after another at their default sizes
# (~15 min on the 2-core reference machine). Run it in a quiet window: nothing else busy.
#
#   bench/run_all.sh [--smoke] [OUT_DIR]  # default: ${TMPDIR:-/tmp}/xdeps-bench-<UTC timestamp>
#
# Each benchmark's full output goes to OUT_DIR/<name>.txt; at the end every target verdict
# ([met] / [MISSED] / [info]) is gathered into OUT_DIR/summary.txt and printed, with the total
# time. A benchmark that fails is recorded (its exit code) and the others still run.
# Environment: PYTHON (default .venv/bin/python); XDEPS_BENCH_PG_URL, a PostgreSQL server URL for
# bench.status's PostgreSQL rows (it creates and drops its own database h8_bench there; set it
# empty to skip PostgreSQL); ONLY, names to run (e.g. ONLY="delivery status"; default: all).
# --smoke passes --smoke to each (seconds each; checks that the script and benchmarks run).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SMOKE=""
if [ "${1:-}" = "--smoke" ]; then
  SMOKE="--smoke"
  shift
fi
OUT=${1:-${TMPDIR:-/tmp}/xdeps-bench-$(date -u +%Y%m%dT%H%M%SZ)}
PG_URL=${XDEPS_BENCH_PG_URL-postgresql+psycopg2://postgres@127.0.0.1:5432/test}
mkdir -p "$OUT"

status_args=()
[ -n "$PG_URL" ] && status_args=(--pg-url "$PG_URL")
# name | command (in the order of BENCHMARKS.md's Summary). Default sizes; time budgets trimmed so
# the set fits in ~15 min (each still runs its minimum of 3 repetitions; status: 2 x 20 calls).
benches=(
  "hook_path|$PY -m bench.hook_path --max-seconds 150"
  "delivery|$PY -m bench.delivery --max-seconds 120"
  "real_airflow|$PY -m bench.real_airflow --max-seconds 200"
  "relay_ingest|$PY -m bench.relay_ingest --max-seconds 150"
  "status|$PY -m bench.status --reps 2 ${status_args[*]}"
)

started=$(date +%s)
{
  echo "bench/run_all.sh at $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "nproc $(nproc); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/summary.txt"
for entry in "${benches[@]}"; do
  name=${entry%%|*}
  cmd="${entry#*|} $SMOKE"
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then
    continue
  fi
  t0=$(date +%s)
  echo "== $name: $cmd" | tee -a "$OUT/summary.txt"
  $cmd >"$OUT/$name.txt" 2>&1
  rc=$?
  {
    grep -E '^\s+\[(met|MISSED|info)\]' "$OUT/$name.txt"
    echo "   exit $rc, $(($(date +%s) - t0)) s, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  } | tee -a "$OUT/summary.txt"
done
echo "Total time $(($(date +%s) - started)) s; outputs in $OUT/" | tee -a "$OUT/summary.txt"
