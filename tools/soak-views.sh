#!/usr/bin/env bash
# Idle CPU of the desktop console per view: starts the release console (the live demo) under
# Xvfb, lets it warm up, then for each view clicks its button in the left navigation with
# xdotool, waits a few seconds and measures the CPU time the process uses over a window with no
# input (utime + stime from /proc/PID/stat).
#
#   tools/soak-views.sh [-w WARMUP_S] [-s SECONDS] [-b BINARY] [-d DISPLAY]
#
#   -w  warm-up before the first view (default 120 s: the demo's rollout has started and its
#       canary has been rolled back by then)
#   -s  measuring window per view (default 60 s)
#   -b  the console binary (default target/release/convoy)
#   -d  the X display to start Xvfb on (default :94)
#
# The navigation buttons are clicked at fixed positions of the console's default window
# (1440 x 880 at zoom 100 %, at the top left of a 1920 x 1080 Xvfb screen with no window
# manager); a console with another window size or zoom needs other positions.
set -euo pipefail

warmup=120
window=60
binary="target/release/convoy"
display=":94"
while getopts "w:s:b:d:h" opt; do
    case "$opt" in
        w) warmup="$OPTARG" ;;
        s) window="$OPTARG" ;;
        b) binary="$OPTARG" ;;
        d) display="$OPTARG" ;;
        h) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "soak-views.sh: unknown option (see -h)" >&2; exit 2 ;;
    esac
done
[ -x "$binary" ] || { echo "soak-views.sh: no console binary at $binary" >&2; exit 2; }
command -v xdotool >/dev/null || { echo "soak-views.sh: xdotool is not installed" >&2; exit 2; }

home=$(mktemp -d /tmp/convoy-views-home.XXXXXX)
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
    echo "soak-views.sh: using the X server already on $display" >&2
else
    Xvfb "$display" -screen 0 1920x1080x24 -nolisten tcp >/dev/null 2>&1 &
    xvfb_pid=$!
    sleep 2
fi

HOME="$home" XDG_CACHE_HOME="" XDG_DATA_HOME="" XDG_CONFIG_HOME="" \
    DISPLAY="$display" LIBGL_ALWAYS_SOFTWARE=1 \
    "$binary" >"$home/console.log" 2>&1 &
console_pid=$!
tick=$(getconf CLK_TCK)
cpu_ticks() { sed 's/.*) //' "/proc/$console_pid/stat" | awk '{ print $12 + $13 }'; }

sleep "$warmup"
echo "view,window_s,cpu_s,cpu_pct_of_one_core,load1"
# name:x:y of each navigation button.
for entry in "Map:74:48" "Fleet table:74:78" "Rollout monitor:74:326" "Reports:74:358" "War room:74:172"; do
    IFS=: read -r name x y <<<"$entry"
    kill -0 "$console_pid" 2>/dev/null || { echo "soak-views.sh: the console exited" >&2; cat "$home/console.log" >&2; exit 1; }
    DISPLAY="$display" xdotool mousemove "$x" "$y" click 1
    # Move the pointer off the navigation: a hovered button is not idle.
    sleep 1
    DISPLAY="$display" xdotool mousemove 1900 1070
    sleep 5
    t0=$(cpu_ticks)
    w0=$(date +%s.%N)
    sleep "$window"
    t1=$(cpu_ticks)
    w1=$(date +%s.%N)
    echo "$name,$(echo "$w1 - $w0" | bc | xargs printf '%.1f'),$(echo "scale=2; ($t1 - $t0) / $tick" | bc),$(echo "scale=1; 100 * ($t1 - $t0) / $tick / ($w1 - $w0)" | bc),$(cut -d' ' -f1 /proc/loadavg)"
done
