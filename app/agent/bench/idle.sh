#!/usr/bin/env bash
# Measures the device agent at rest: resident memory and CPU time of a release build connected to
# a local Mosquitto, with the default sampling (health every 10 s, heartbeat every 300 s) and one
# unit health source. docs/BENCHMARKS.md ("Device agent") has the figures.
#
#   CARGO_BUILD_JOBS=1 cargo build --release -p convoy_agent
#   cargo build -p convoy                      # only for `convoy key generate` and `key trust`
#   bash app/agent/bench/idle.sh [SECONDS]     # default 120
set -euo pipefail
cd "$(dirname "$0")/../../.."
secs="${1:-120}"
agent=target/release/convoy-agent
convoy=target/debug/convoy
[ -x "$agent" ] || { echo "build it first: cargo build --release -p convoy_agent" >&2; exit 1; }
[ -x "$convoy" ] || convoy=target/release/convoy
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
printf 'bench passphrase for the agent\n' > "$work/pass"
chmod 600 "$work/pass"
"$convoy" key generate --out "$work/key" --passphrase-file "$work/pass" >/dev/null
"$convoy" key trust --key "$work/key" --out "$work/trust" --passphrase-file "$work/pass" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$work/mosquitto.conf"
"$mosquitto" -c "$work/mosquitto.conf" >/dev/null 2>&1 &
mkdir -p "$work/state"
cat > "$work/agent.toml" <<TOML
[device]
id = "BENCH1"
hardware_id = "T300"
components = { firmware = "2.4.0" }
[broker]
url = "mqtt://127.0.0.1:$port"
[trust]
dir = "$work/trust"
[state]
dir = "$work/state"
[installer]
kind = "directory"
root = "$work/slots"
[[health.units]]
name = "bench.service"
count_command = ["echo", "0"]
[health.storage]
path = "$work/state"
TOML
"$agent" --config "$work/agent.toml" 2>"$work/agent.log" &
pid=$!
for _ in $(seq 50); do grep -q connected "$work/agent.log" 2>/dev/null && break; [ -s "$work/state/state.json" ] && break; sleep 0.1; done
# Let start-up settle before the idle period is measured.
sleep 5
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
start=$(date +%s.%N)
sleep "$secs"
t1=$(ticks)
end=$(date +%s.%N)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
threads=$(awk '/Threads/ {print $2}' "/proc/$pid/status")
python3 - "$t0" "$t1" "$hz" "$start" "$end" "$rss" "$hwm" "$threads" "$(stat -c %s "$agent")" <<'PY'
import sys
t0, t1, hz = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
wall = float(sys.argv[5]) - float(sys.argv[4])
cpu = (t1 - t0) / hz
print(f"binary: {int(sys.argv[9]) / 1e6:.1f} MB")
print(f"resident: {int(sys.argv[6]) / 1024:.1f} MiB now, {int(sys.argv[7]) / 1024:.1f} MiB peak, {sys.argv[8]} threads")
print(f"idle: {cpu:.2f} s of CPU in {wall:.0f} s of wall time ({100 * cpu / wall:.3f} % of one core)")
PY
