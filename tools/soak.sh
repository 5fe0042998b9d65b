#!/usr/bin/env bash
# Soak benchmark of the desktop console: starts the release console (the live demo by default)
# under Xvfb, leaves it alone for N minutes, and samples its resident memory and CPU time.
#
#   tools/soak.sh [-m MINUTES] [-i SECONDS] [-o CSV] [-b BINARY] [-d DISPLAY] [-- CONVOY ARGS...]
#
#   -m  how long to run (default 30 minutes)
#   -i  sampling interval (default 30 s)
#   -o  where to write the samples (default soak-YYYYmmdd-HHMMSS.csv in the current directory)
#   -b  the console binary (default target/release/convoy; build it with
#       `cargo build --release -p convoy`)
#   -d  the X display to start Xvfb on (default :94); an Xvfb already on it is used as is
#   arguments after `--` go to convoy (default: none, i.e. the demo)
#
# Each sample (one CSV row) is: wall seconds since start, VmRSS, RssAnon and RssFile in KiB (from
# /proc/PID/status), the process's CPU seconds so far (utime + stime from /proc/PID/stat), the CPU
# share of the last interval, and the 1-minute load average. At the end it prints the RSS at
# minute 2 and at the end, the growth per minute between them, and CPU time beside wall time.
# The console runs with a fresh HOME (so a fresh demo cache and no saved UI state) and software
# OpenGL (LIBGL_ALWAYS_SOFTWARE=1), as on a machine without a GPU.
#
# Processes this script starts (Xvfb, the console) are stopped by their PIDs when it ends.
set -euo pipefail

minutes=30
interval=30
out=""
binary="target/release/convoy"
display=":94"
while getopts "m:i:o:b:d:h" opt; do
    case "$opt" in
        m) minutes="$OPTARG" ;;
        i) interval="$OPTARG" ;;
        o) out="$OPTARG" ;;
        b) binary="$OPTARG" ;;
        d) display="$OPTARG" ;;
        h) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "soak.sh: unknown option (see -h)" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ -z "$out" ] && out="soak-$(date -u +%Y%m%d-%H%M%S).csv"

if [ ! -x "$binary" ]; then
    echo "soak.sh: no console binary at $binary (build it: cargo build --release -p convoy)" >&2
    exit 2
fi
command -v Xvfb >/dev/null || { echo "soak.sh: Xvfb is not installed" >&2; exit 2; }

home=$(mktemp -d /tmp/convoy-soak-home.XXXXXX)
xvfb_pid=""
console_pid=""
cleanup() {
    [ -n "$console_pid" ] && kill "$console_pid" 2>/dev/null || true
    [ -n "$console_pid" ] && wait "$console_pid" 2>/dev/null || true
    [ -n "$xvfb_pid" ] && kill "$xvfb_pid" 2>/dev/null || true
    rm -rf "$home"
}
trap cleanup EXIT INT TERM

lock="/tmp/.X${display#:}-lock"
if [ -e "$lock" ] && kill -0 "$(tr -d ' ' <"$lock")" 2>/dev/null; then
    echo "soak.sh: using the X server already on $display" >&2
else
    Xvfb "$display" -screen 0 1920x1080x24 -nolisten tcp >/dev/null 2>&1 &
    xvfb_pid=$!
    sleep 2
fi

HOME="$home" XDG_CACHE_HOME="" XDG_DATA_HOME="" XDG_CONFIG_HOME="" \
    DISPLAY="$display" LIBGL_ALWAYS_SOFTWARE=1 \
    "$binary" "$@" >"$home/console.log" 2>&1 &
console_pid=$!

tick=$(getconf CLK_TCK)
status_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$console_pid/status"; }
# utime and stime are fields 14 and 15 of /proc/PID/stat; the command name (field 2) may hold
# spaces, so count from after its closing parenthesis.
cpu_ticks() { sed 's/.*) //' "/proc/$console_pid/stat" | awk '{ print $12 + $13 }'; }

echo "wall_s,vmrss_kib,rss_anon_kib,rss_file_kib,cpu_s,cpu_pct_interval,load1" >"$out"
start=$(date +%s.%N)
end_at=$(echo "$start + $minutes * 60" | bc)
prev_ticks=0
prev_wall=0
echo "soak.sh: console PID $console_pid on $display for $minutes min, samples every $interval s into $out" >&2
while :; do
    sleep "$interval"
    if ! kill -0 "$console_pid" 2>/dev/null; then
        echo "soak.sh: the console exited early; its output:" >&2
        cat "$home/console.log" >&2
        exit 1
    fi
    now=$(date +%s.%N)
    wall=$(echo "$now - $start" | bc)
    ticks=$(cpu_ticks)
    cpu=$(echo "scale=2; $ticks / $tick" | bc)
    pct=$(echo "scale=1; 100 * ($ticks - $prev_ticks) / $tick / ($wall - $prev_wall)" | bc)
    load=$(cut -d' ' -f1 /proc/loadavg)
    printf '%.0f,%s,%s,%s,%s,%s,%s\n' "$wall" "$(status_kib VmRSS)" "$(status_kib RssAnon)" \
        "$(status_kib RssFile)" "$cpu" "$pct" "$load" >>"$out"
    prev_ticks=$ticks
    prev_wall=$wall
    if [ "$(echo "$now >= $end_at" | bc)" = 1 ]; then
        break
    fi
done

# Summary: RSS at the first sample at or after minute 2, and at the end.
awk -F, -v minutes="$minutes" 'NR > 1 {
        if (!base && $1 >= 120) { base = 1; t0 = $1; r0 = $2 }
        t1 = $1; r1 = $2; cpu = $5; max = ($2 > max ? $2 : max)
    }
    END {
        printf "wall %d s, CPU %.1f s (%.1f%% of one core)\n", t1, cpu, 100 * cpu / t1
        if (base && t1 > t0) {
            printf "VmRSS at %d s: %.1f MiB; at %d s: %.1f MiB; peak %.1f MiB; growth %.2f MiB/min\n",
                t0, r0 / 1024, t1, r1 / 1024, max / 1024, (r1 - r0) / 1024 / ((t1 - t0) / 60)
        }
    }' "$out"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
