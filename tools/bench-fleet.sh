#!/usr/bin/env bash
# Issue 22's benchmark: every figure of the issue's table at a million devices (docs/BENCHMARKS.md,
# "Issue 22: a million devices"). Release build; prints Markdown rows.
#
#   tools/bench-fleet.sh            # 1,000,000 devices (the server's summary also at 100,000)
#   DEVICES=200000 tools/bench-fleet.sh
#   RUNS=5 tools/bench-fleet.sh     # whole-process runs per command (default 3, best and worst shown)
#   PART=process tools/bench-fleet.sh     # only the whole processes (PART=inprocess: only bench_million)
#   BUILD=0 tools/bench-fleet.sh    # use the release binaries already in target/
#
# Whole processes (`convoy plan`, `convoy score finding`, `convoy fleet import`, the first plan on
# the imported cache) run under
# `/usr/bin/time -v`: wall, user + system CPU and maximum resident memory. The in-process figures
# (the plan itself, scoring itself, the console's load, memory, search + sort, status message and
# cohort view, the server's `GET /fleet`) come from `app/examples/bench_million.rs`.
# The byte-identical guard of plans and scorecards is a test (tests/it/guard.rs) that runs with
# the others; this script does not repeat it.
set -euo pipefail

cd "$(dirname "$0")/.."
DEVICES=${DEVICES:-1000000}
RUNS=${RUNS:-3}
PART=${PART:-all}
NOW=2026-11-23T00:00:00Z

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

if [ "${BUILD:-1}" = 0 ]; then
  echo "not building (BUILD=0): using the release binaries in target/" >&2
elif [ "$PART" = process ]; then
  echo "building (release)..." >&2
  nice -n 10 cargo build --release --locked -p convoy --bin convoy >&2
else
  echo "building (release)..." >&2
  nice -n 10 cargo build --release --locked -p convoy --bin convoy --example bench_million >&2
fi
BIN=${CONVOY_BIN:-$PWD/target/release/convoy}
BENCH=$PWD/target/release/examples/bench_million

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ "$PART" != inprocess ]; then
echo "generating $DEVICES devices..." >&2
"$BIN" fleet generate --devices "$DEVICES" --seed 1 --now "$NOW" --out "$WORK/fleet.db" >&2
"$BIN" fleet generate --devices "$DEVICES" --seed 1 --now "$NOW" --out "$WORK/fleet.csv" >&2

# One run of a command under /usr/bin/time -v: "wall cpu rss_mib".
measure() {
  local log="$WORK/time.log"
  /usr/bin/time -v -o "$log" "$@" > "$WORK/out" 2> "$WORK/err" || {
    echo "failed: $*" >&2
    cat "$WORK/err" >&2
    exit 1
  }
  awk -F': ' '
    /Elapsed \(wall clock\)/ { n = split($2, p, ":"); w = 0; for (i = 1; i <= n; i++) w = w * 60 + p[i] }
    /User time/ { u = $2 }
    /System time/ { s = $2 }
    /Maximum resident set size/ { r = $2 / 1024 }
    END { printf "%.2f %.2f %.0f\n", w, u + s, r }
  ' "$log"
}

# Markdown row of RUNS runs: best and worst wall, CPU of each, max RSS.
runs() {
  local what=$1
  shift
  local results=()
  for _ in $(seq "$RUNS"); do
    results+=("$(measure "$@")")
  done
  printf '%s\n' "${results[@]}" | sort -n | awk -v what="$what" -v n="$DEVICES" -v runs="$RUNS" '
    NR == 1 { bw = $1; bc = $2; br = $3 }
    { ww = $1; wc = $2; if ($3 > mr) mr = $3 }
    END { printf "| %s | %d | %.2f (%.2f) | %.2f (%.2f) | %d MiB | %d runs |\n", what, n, bw, bc, ww, wc, mr, runs }
  '
}

echo
echo "Load average at the start: $(loadavg); $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); commit $(git rev-parse --short HEAD)"
echo
echo "| process | devices | best: wall s (CPU s) | worst: wall s (CPU s) | max RSS | note |"
echo "| --- | ---: | ---: | ---: | ---: | --- |"
# The first load of a new cache stores its snapshot; warm it once, untimed, as a console would.
"$BIN" plan --fleet "$WORK/fleet.db" --release fixtures/releases/t300-fw-2.5.0.json \
  --catalog fixtures/releases/catalog.json --now "$NOW" --seed 1 --json > /dev/null
runs '`convoy plan --json` (cache with a current snapshot)' \
  "$BIN" plan --fleet "$WORK/fleet.db" --release fixtures/releases/t300-fw-2.5.0.json \
  --catalog fixtures/releases/catalog.json --now "$NOW" --seed 1 --json
runs '`convoy score finding --json` (`t300-remote-rce`)' \
  "$BIN" score finding fixtures/findings/t300-remote-rce.json --fleet "$WORK/fleet.db" \
  --now "$NOW" --json
import_once() {
  rm -f "$WORK/import.db" "$WORK/import.db-wal" "$WORK/import.db-shm"
  "$BIN" fleet import "$WORK/fleet.csv" --db "$WORK/import.db"
}
export -f import_once
export BIN WORK
runs '`convoy fleet import` of a CSV into a new cache' bash -c import_once
# The import into a new cache writes the fleet snapshot and the summary's counts itself: the first
# plan on the freshly imported cache reads the snapshot (no row load, no snapshot write). Each run
# imports anew, untimed, then times the plan.
first_plans=()
for _ in $(seq "$RUNS"); do
  import_once > /dev/null 2>&1
  first_plans+=("$(measure "$BIN" plan --fleet "$WORK/import.db" \
    --release fixtures/releases/t300-fw-2.5.0.json --catalog fixtures/releases/catalog.json \
    --now "$NOW" --seed 1 --json)")
done
printf '%s\n' "${first_plans[@]}" | sort -n | awk -v n="$DEVICES" -v runs="$RUNS" '
  NR == 1 { bw = $1; bc = $2 }
  { ww = $1; wc = $2; if ($3 > mr) mr = $3 }
  END { printf "| the first `convoy plan --json` on the freshly imported cache | %d | %.2f (%.2f) | %.2f (%.2f) | %d MiB | %d runs |\n", n, bw, bc, ww, wc, mr, runs }
'
echo
echo "Load average after the processes: $(loadavg)"
echo
fi
[ "$PART" = process ] && exit 0

echo "In-process (bench_million), wall and the process's CPU over the same interval:"
echo
"$BENCH" core "$DEVICES"
"$BENCH" console "$DEVICES" | tail -n +3
"$BENCH" serve 100000 | tail -n +3
if [ "$DEVICES" != 100000 ]; then
  "$BENCH" serve "$DEVICES" | tail -n +3
fi
echo
echo "Load average at the end: $(loadavg)"
