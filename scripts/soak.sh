#!/usr/bin/env bash
# Soak: many start/stop cycles and many qemu restarts under one launcher, with the leaks that
# matter printed at the start and at the end of each phase (they should be flat):
#   launcher RSS and open fds, zombie processes, qemu processes left, taps and tc filters in the
#   namespace, sockets left in the run folder.
# A benchmark, not a test: it prints figures and exits 1 only when a cycle itself fails.
# Usage: scripts/soak.sh [CYCLES=100] [RESTARTS=500]   (root; tinylinux built; release binary)
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=${1:-100}
restarts=${2:-500}
[ "$(id -u)" = 0 ] || { echo "soak: run as root (network namespaces, taps)" >&2; exit 1; }
for t in ip tc ps jq; do command -v $t >/dev/null || { echo "soak: '$t' is missing" >&2; exit 1; }; done
[ -x target/release/launcher ] || cargo build --release
bin=$PWD/target/release/launcher
build=$PWD/images/tinylinux/build
[ -f "$build/vmlinuz" ] || { echo "soak: run images/tinylinux/build.sh first" >&2; exit 1; }

ns=soak-$$
dir=$(mktemp -d /tmp/launcher-soak.XXXXXX)
chmod 755 "$dir"   # qemu runs as its own user and walks into its run and state dirs
cleanup() {
  [ -n "${pid:-}" ] && kill -9 "$pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add eth1 type veth peer name p1
ip -n "$ns" link set eth1 up
ip -n "$ns" link set p1 up

config() { # $1: the [restart] section
  cat >"$dir/launcher.toml" <<EOF
[vm]
name = "soak"
machine = "q35"
memory = 256
shutdown_timeout = 20
boot_timeout = 120
[kernel]
path = "$build/vmlinuz"
initrd = "$build/initramfs.cpio.gz"
append = "console=ttyS0 panic=-1 tl.mgmt=user tl.hostname=soak"
[nics]
names = ["eth1"]
[management]
forwards = []
[console]
ready_pattern = "TINYLINUX-READY"
telnet_port = 0
log = "$dir/console.log"
[paths]
run_dir = "$dir/run"
state_dir = "$dir/state"
health_file = "$dir/health"
$1
EOF
}

start() {
  rm -f "$dir/health"
  ip netns exec "$ns" env LAUNCHER_SOCKET="$dir/control.sock" LAUNCHER_CONFIG="$dir/launcher.toml" \
    "$bin" run >"$dir/launcher.log" 2>&1 &
  pid=$!
}
wait_health() { # $1: the health line's start, $2: seconds
  local end=$((SECONDS + $2))
  until grep -q "^$1" "$dir/health" 2>/dev/null; do
    [ $SECONDS -lt $end ] || { echo "soak: no '$1' in the health file after $2 s" >&2; tail -20 "$dir/launcher.log" >&2; exit 1; }
    kill -0 "$pid" 2>/dev/null || { echo "soak: the launcher exited early" >&2; tail -20 "$dir/launcher.log" >&2; exit 1; }
    sleep 0.1
  done
}
stop() {
  kill -TERM "$pid"
  local code=0
  wait "$pid" || code=$?
  pid=
  [ "$code" = 0 ] || { echo "soak: the launcher exited $code" >&2; tail -20 "$dir/launcher.log" >&2; exit 1; }
}
qemu_pid() {
  LAUNCHER_SOCKET="$dir/control.sock" "$bin" status --json 2>/dev/null | jq -r '.qemu_pid // empty'
}

# The figures: "-" where there is no launcher to look at.
figures() { # $1: label
  local rss=- fds=-
  if [ -n "${pid:-}" ] && [ -d /proc/$pid ]; then
    rss=$(awk '/^VmRSS/{print $2}' /proc/$pid/status)
    fds=$(ls /proc/$pid/fd | wc -l)
  fi
  local zombies qemus taps filters socks
  zombies=$(ps -eo stat= | grep -c '^Z' || true)
  qemus=$(pgrep -fc "qemu-system.*-name soak" || true)
  taps=$(ip -n "$ns" -o link show type tun | wc -l)
  filters=$(ip netns exec "$ns" tc filter show dev eth1 ingress | grep -c '^filter' || true)
  socks=$( (find "$dir/run" -type s 2>/dev/null || true) | wc -l)
  printf '%-28s %10s %8s %8s %6s %5s %11s %8s\n' "$1" "$rss" "$fds" "$zombies" "$qemus" "$taps" "$filters" "$socks"
}
header() {
  printf '%-28s %10s %8s %8s %6s %5s %11s %8s\n' "" "RSS KiB" "fds" "zombies" "qemu" "taps" "eth1 filt." "sockets"
}

echo "== $cycles start/stop cycles (boot to ready, SIGTERM, exit 0) =="
config ""
header
figures "before"
t0=$SECONDS
for i in $(seq 1 "$cycles"); do
  start
  wait_health "0 " 120
  [ "$i" = 1 ] && figures "cycle 1, ready"
  [ "$i" = "$cycles" ] && figures "cycle $cycles, ready"
  stop
done
figures "after"
echo "$cycles cycles in $((SECONDS - t0)) s"

echo "== $restarts qemu restarts under one launcher (qemu SIGKILLed, restart.policy on-failure) =="
config $'[restart]\npolicy = "on-failure"\nmax = 1000\nbackoff = 0'
start
wait_health "0 " 120
header
figures "first qemu ready"
t0=$SECONDS
prev=$(qemu_pid)
for i in $(seq 1 "$restarts"); do
  kill -9 "$prev"
  end=$((SECONDS + 30))
  while :; do
    cur=$(qemu_pid)
    [ -n "$cur" ] && [ "$cur" != "$prev" ] && break
    [ $SECONDS -lt $end ] || { echo "soak: no new qemu after restart $i" >&2; tail -20 "$dir/launcher.log" >&2; exit 1; }
    sleep 0.05
  done
  prev=$cur
  [ "$i" = 1 ] && figures "restart 1"
done
figures "restart $restarts"
stop
figures "after"
echo "$restarts restarts in $((SECONDS - t0)) s"
