#!/usr/bin/env bash
# Fast start benchmark: cold boot vs restore, and vrnetlab's way, on the same guest in the same
# run. Prints figures and ratios; a benchmark, not a test (exits 1 only when a step fails).
#   cold boot  : launcher run, to ready (the launcher's ready transition, in its log) and to
#                traffic (a ping from a peer namespace across eth1: tap - tc mirred - veth;
#                one ping process sending every 20 ms until the first reply)
#   save       : launcher snapshot save (guests paused, total, tar size)
#   restore    : launcher run --restore (RAM memfd filled from LZ4 parts while qemu starts, the
#                devices' zstd stream, overlay, -incoming defer), to ready, to traffic
#   late link  : our restore with eth1 made 0.5 s after the start (as containerlab adds links),
#                to ready, from the link's arrival
#   vrnetlab's : tar extraction of an uncompressed stream + overlay, qemu -incoming "exec:cat FILE",
#                cont (over a second QMP socket), to running, to traffic, and (a guest with
#                console.ready_tcp) to ready: its service's first bytes through the same forward,
#                probed as the launcher probes it (one connection at a time from cont, 3 s each,
#                250 ms apart; python started beforehand, as the launcher's probe is in process),
#                timed from the restore's start; the same wiring.
#                Its stream (RAM included, as vrnetlab saves it) is made from our snapshot
#                beforehand, untimed: a qemu loads our RAM and devices, then migrates to a file.
#   vrnetlab as run: the same mechanism sequenced as vrnetlab's launcher runs it (VRL-new
#                common/vrnetlab.py@2886080): python's tarfile.extractall, and the 2 s that
#                VM.start() gives a new qemu (Popen.communicate(timeout=2)) before it connects the
#                monitor and sends cont; to ready and to traffic. (Its health turns "running"
#                only after a second such 2 s wait, after cont: not timed here.)
# Guests: tinylinux always; the Debian + FRR guest when DEBIAN_QCOW2 names its qcow2 (the path
# images/debian/build.sh prints last; vmlinuz and initrd.img beside it) and DEBIAN_CONFIG a
# launcher.toml for it ({qcow2} and {dir}, a scratch folder, substituted), its eth1 answering
# pings at DEBIAN_PING (default 192.0.2.2; the peer is 192.0.2.1/24).
# Usage: scripts/fast-start-bench.sh   (root; tinylinux built; release binary; zstd, lz4, python3)
#   TINYLINUX=0 or DEBIAN=0 skips that guest; KEEP=1 keeps the scratch folder (the logs).
# Note: the vrnetlab emulation runs qemu as vrnetlab does: as root, with no -sandbox (ours denies
# spawn, and `exec:cat` spawns); the output says so.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "fast-start-bench: run as root" >&2; exit 1; }
for t in ip zstd lz4 tar python3; do command -v $t >/dev/null || { echo "fast-start-bench: '$t' is missing" >&2; exit 1; }; done
[ -x target/release/launcher ] || cargo build --release
bin=$PWD/target/release/launcher
build=$PWD/images/tinylinux/build
[ -f "$build/vmlinuz" ] || { echo "fast-start-bench: run images/tinylinux/build.sh first" >&2; exit 1; }

ns=lt-clock-fsb-$$; peer=lt-clock-fsbp-$$
dir=$(mktemp -d /tmp/lt-clock-fsb.XXXXXX)
chmod 755 "$dir"   # the sandboxed qemu user walks into its run and state dirs
pid=
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  ip netns del "$peer" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "fast-start-bench: kept $dir (launcher.log, console.log)" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
ip netns add "$ns"; ip netns add "$peer"
ip -n "$ns" link set lo up
# link: the data link eth1 - p1 (the peer at 192.0.2.1/24), made again after a late-link restore.
link() {
  ip link add fsb-a-$$ netns "$ns" type veth peer name p1 netns "$peer"
  ip -n "$ns" link set fsb-a-$$ name eth1
  ip -n "$ns" link set eth1 up
  ip -n "$peer" link set p1 up
  ip -n "$peer" addr add 192.0.2.1/24 dev p1
}
link
export LAUNCHER_SOCKET=$dir/control.sock

now() { date +%s.%N; }
# span T0 T1: the seconds from T0 to T1 (both from `now`), to the hundredth.
span() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
since() { span "$1" "$(now)"; }
# start ENV... : the launcher in the namespace, in the background
start() {
  env "$@" CLAB_INTFS=1 ip netns exec "$ns" "$bin" run --config "$dir/launcher.toml" >>"$dir/launcher.log" 2>&1 &
  pid=$!
}
stop() {
  kill -TERM "$pid"; local i=0
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; i=$((i+1)); [ $i -lt 900 ] || { echo "launcher did not stop" >&2; exit 1; }; done
  pid=
}
# wait_until WHAT SECONDS COMMAND...: polls every 50 ms, bounded. The clock is bash's own: a
# python per poll took CPU from the restored guest that vrnetlab's side (timed by `banner`
# alone) did not pay.
wait_until() {
  local what=$1 max=$2; shift 2; local end=$(( ${EPOCHREALTIME/./} + max * 1000000 ))
  until "$@" >/dev/null 2>&1; do
    sleep 0.05
    (( ${EPOCHREALTIME/./} < end )) \
      || { echo "fast-start-bench: no $what within ${max}s; log: $dir/launcher.log" >&2; tail -20 "$dir/launcher.log" >&2; exit 1; }
  done
}
# first_ok FILE COMMAND...: in the background, polls COMMAND every 50 ms (at most 300 s) and
# writes the time of its first success to FILE; got FILE T0 WHAT waits (bounded) for it and
# prints the seconds since T0. So traffic is timed from the start, side by side with ready.
first_ok() {
  local f=$1; shift; rm -f "$f"
  ( i=0; until "$@" >/dev/null 2>&1; do sleep 0.05; i=$((i+1)); [ $i -lt 6000 ] || exit 1; done; now >"$f" ) &
}
got() {
  local i=0
  until [ -s "$1" ]; do sleep 0.05; i=$((i+1)); [ $i -lt 6000 ] || { echo "fast-start-bench: no $3" >&2; exit 1; }; done
  span "$2" "$(cat "$1")"
}
ready() { "$bin" health; }
# banner PORT T0 GO: in the namespace, the launcher's TCP probe from when the file GO appears
# (python started beforehand, as the launcher's probe is in process at `cont`): the seconds from
# T0 (a `now` taken before) until a service behind the forward on PORT sends its first bytes
# (one connection at a time, each given 3 s, 250 ms between).
banner() {
  ip netns exec "$ns" python3 - "$1" "$2" "$3" <<'PY'
import os, socket, sys, time
t0 = float(sys.argv[2])
while not os.path.exists(sys.argv[3]) and time.time() - t0 < 120:
    time.sleep(0.002)
while time.time() - t0 < 120:
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
        s.settimeout(3); s.sendall(b"\r\n")
        if s.recv(64):
            print(f"{time.time() - t0:.3f}"); sys.exit(0)
    except OSError:
        pass
    time.sleep(0.25)
sys.exit("no answer")
PY
}
# traffic: one ping process sending every 20 ms until the first reply (up to 60 s), so a
# figure is within 20 ms (one ping at a time, each given 0.2 s, made it a quarter second).
traffic() { ip netns exec "$peer" ping -q -c 1 -i 0.02 -w 60 "$target"; }
# ready_at T0: the seconds from T0 to the launcher's last ready transition in its log (the
# moment it declared ready, not when a poll saw it: polling was 50 ms coarse).
ready_at() {
  local ts; ts=$(grep -E '^[0-9-]+T[0-9:.]+Z +INFO state from=.* to="ready"' "$dir/launcher.log" | tail -1 | cut -d' ' -f1)
  [ -n "$ts" ] || { echo "fast-start-bench: no ready transition in $dir/launcher.log" >&2; exit 1; }
  span "$1" "$(date -d "$ts" +%s.%N)"
}
# qmp SOCKET STEP...: QMP steps, in order: cont (wait for the incoming stream, then cont),
# go:FILE (wait until FILE exists: the caller's moment, with python already started), or
# full:IN:OUT (load our devices' stream IN into a qemu whose RAM is already ours, then save
# everything, RAM included, to OUT as one uncompressed stream, then quit).
qmp() {
  python3 - "$@" <<'PY'
import json, os, socket, sys, time
for _ in range(3000):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1]); break
    except OSError:
        s.close(); time.sleep(0.02)
f = s.makefile("rw")
def cmd(c, args=None):
    m = {"execute": c}
    if args is not None:
        m["arguments"] = args
    f.write(json.dumps(m) + "\n"); f.flush()
    while True:
        m = json.loads(f.readline())
        if "error" in m:
            sys.exit(f"QMP {c}: {m['error']}")
        if "return" in m:
            return m["return"]
def shared(on):
    cmd("migrate-set-capabilities", {"capabilities": [{"capability": "x-ignore-shared", "state": on}]})
def loaded():
    while cmd("query-status")["status"] == "inmigrate":
        time.sleep(0.01)
f.readline(); cmd("qmp_capabilities")
for step in sys.argv[2:]:
    if step == "cont":
        loaded(); cmd("cont")
    elif step.startswith("go:"):
        while not os.path.exists(step[3:]):
            time.sleep(0.002)
    else:
        _, src, dst = step.split(":")
        shared(True); cmd("migrate-incoming", {"uri": f"exec:cat {src}"}); loaded()
        shared(False); cmd("migrate-set-parameters", {"max-bandwidth": 1 << 40})
        cmd("migrate", {"uri": f"exec:cat > {dst}"})
        while cmd("query-migrate").get("status") not in ("completed", "failed"):
            time.sleep(0.05)
        assert cmd("query-migrate")["status"] == "completed", "the full stream was not written"
        f.write(json.dumps({"execute": "quit"}) + "\n"); f.flush()
PY
}

bench() { # NAME: the guest in $dir/launcher.toml, pinging $target
  local name=$1 t0 cold_ready cold_traffic save_out raw
  : >"$dir/launcher.log"
  t0=$(now); start; first_ok "$dir/t.cold" traffic
  wait_until "cold ready" 900 ready; cold_ready=$(ready_at "$t0")
  cold_traffic=$(got "$dir/t.cold" "$t0" "cold traffic")
  t0=$(now)
  save_out=$("$bin" snapshot save "$dir/ours.tar")
  local save_s; save_s=$(since "$t0")
  local paused; paused=$(sed -n 's/.*guests paused \([0-9]*\) ms.*/\1/p' <<<"$save_out")
  stop
  # vrnetlab's file: the same state as one uncompressed stream (RAM included), in a tar with
  # the overlays.
  mkdir -p "$dir/v" "$dir/x"
  tar -C "$dir/v" -xf "$dir/ours.tar"
  full_stream "$dir/v"
  tar -C "$dir/v" -cf "$dir/vrnetlab.tar" --exclude='ram.*.lz4' --exclude=devices.zst .
  rm -rf "$dir/v"

  # RESTORES rounds (3 unless told), ours then vrnetlab's in each: one restore is too noisy here.
  local r_ready=() r_traffic=() v_running=() v_traffic=() v_ready=() l_ready=() a_ready=() a_traffic=() round
  for round in $(seq "${RESTORES:-3}"); do
    restore_ours
    restore_vrnetlab way
    restore_vrnetlab as-run
  done
  # And ours with eth1 coming 0.5 s after the start, as containerlab adds links to a started
  # container: ready timed from the link's arrival (the RAM fill runs in the wait).
  for round in $(seq "${RESTORES:-3}"); do
    restore_late
  done

  local ours_size vr_size
  ours_size=$(stat -c %s "$dir/ours.tar"); vr_size=$(stat -c %s "$dir/vrnetlab.tar")
  local IFS=,
  python3 - "$name" "$cold_ready" "$cold_traffic" "$save_s" "$paused" "$ours_size" "${r_ready[*]}" "${r_traffic[*]}" "$vr_size" "${v_running[*]}" "${v_traffic[*]}" "${v_ready[*]}" "${l_ready[*]}" "${a_ready[*]}" "${a_traffic[*]}" <<'PY'
import statistics, sys
n, cr, ct, sv, pa, os_, rr, rt, vs, vr, vt, vready, lr, aready, at = sys.argv[1:]
cr, ct, sv = map(float, (cr, ct, sv))
runs = lambda v: [float(x) for x in v.split(",")] if v and "-" not in v else []
rr, rt, vr, vt, vready, lr, aready, at = map(runs, (rr, rt, vr, vt, vready, lr, aready, at))
med = statistics.median
# "median (min-max)" of a list of seconds
def fig(v):
    return f"{med(v):5.2f} s ({min(v):.2f}-{max(v):.2f})" if len(v) > 1 else f"{v[0]:5.2f} s"
mib = lambda b: f"{int(b) / 2**20:.1f} MiB"
vrr = f"; ready {fig(vready)} (SSH banner)" if vready else ""
print(f"== {n}")
print(f"cold boot      : ready {cr:7.2f} s   traffic {ct:7.2f} s")
print(f"save (ours)    : {sv:.2f} s, guests paused {pa} ms, {mib(os_)} (zstd devices, LZ4 RAM, overlays)")
print(f"restores       : {len(rr)} of each, alternating; median (min-max)")
print(f"restore (ours) : ready {fig(rr)}   traffic {fig(rt)}")
print(f"vrnetlab's way : running {fig(vr)}   traffic {fig(vt)}{vrr}   ({mib(vs)} tar, uncompressed stream; qemu as root, no -sandbox, as vrnetlab runs it)")
ard = f"ready {fig(aready)} (SSH banner)   " if aready else ""
print(f"vrnetlab as run: {ard}traffic {fig(at)}   (python's tarfile, then the 2 s its VM.start() gives qemu before cont)")
print(f"ours, late link: ready {fig(lr)} after eth1 came (0.5 s after the start)")
rr, rt, vr, vt = map(med, (rr, rt, vr, vt))
print(f"ratios (median): cold/ours ready {cr / rr:.0f}x, traffic {ct / rt:.0f}x; vrnetlab/ours traffic {vt / rt:.1f}x, vrnetlab running/ours ready {vr / rr:.1f}x; size {int(vs) / int(os_):.1f}x")
if vready:
    print(f"ready vs ready : vrnetlab's way {med(vready):.2f} s (its SSH banner; it sets no clock), ours {rr:.2f} s: vrnetlab/ours {med(vready) / rr:.1f}x")
    print(f"as run vs ours : ready {med(aready) / rr:.1f}x, traffic {med(at) / rt:.1f}x (vrnetlab's launcher as it runs the same mechanism)")
else:
    print(f"as run vs ours : traffic {med(at) / rt:.1f}x (vrnetlab's launcher as it runs the same mechanism)")
PY
}

# Our restore of $dir/ours.tar with eth1 made 0.5 s after the start, timed from then to ready
# (appended to l_ready).
restore_late() {
  local t0
  ip -n "$ns" link del eth1
  start LAUNCHER_RESTORE="$dir/ours.tar"
  sleep 0.5
  link; t0=$(now)
  wait_until "late-link ready" 120 ready; l_ready+=("$(ready_at "$t0")")
  stop
}

# Our restore of $dir/ours.tar, timed to ready and to traffic (appended to r_ready, r_traffic).
restore_ours() {
  local t0
  t0=$(now); start LAUNCHER_RESTORE="$dir/ours.tar"; first_ok "$dir/t.restore" traffic
  wait_until "restored ready" 120 ready; r_ready+=("$(ready_at "$t0")")
  r_traffic+=("$(got "$dir/t.restore" "$t0" "restored traffic")")
  stop
}

# vrnetlab's way with $dir/vrnetlab.tar, timed to running, ready (when the guest has a
# ready_tcp port) and traffic. HOW: "way", its mechanism at its best (GNU tar, cont as soon as
# the stream is loaded; appended to v_running, v_ready, v_traffic), or "as-run", sequenced as its
# launcher runs it (VRL-new common/vrnetlab.py@2886080: python's tarfile.extractall, then
# VM.start() gives the new qemu Popen.communicate(timeout=2) before it connects the monitor
# and sends cont; appended to a_ready, a_traffic). Either way the incoming stream loads while
# qemu starts and the guest runs from cont.
restore_vrnetlab() {
  local how=$1 t0
  mkdir -p "$dir/x"
  t0=$(now); first_ok "$dir/t.vrnetlab" traffic
  if [ "$how" = as-run ]; then
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$dir/vrnetlab.tar" "$dir/x"
  else
    tar -C "$dir/x" -xf "$dir/vrnetlab.tar"
  fi
  for d in "$dir"/x/*/disk*.qcow2; do
    [ -e "$d" ] || continue
    local o; o=$(overlay_of "$d"); [ -n "$o" ] || { echo "fast-start-bench: no overlay for $d" >&2; exit 1; }
    cp "$d" "$o"
  done
  local stream; stream=$(find "$dir/x" -name memory.raw)
  local probe=
  rm -f "$dir/go"
  if [ -n "$ready_port" ]; then banner "$ready_port" "$t0" "$dir/go" >"$dir/t.banner" & probe=$!; fi
  vrnetlab_qemu "$stream"
  if [ "$how" = as-run ]; then
    # Its python is running when its 2 s end: the QMP helper is started and connected before.
    rm -f "$dir/cont-go"
    qmp "$dir/run/qmp.sock" "go:$dir/cont-go" cont & local helper=$!
    sleep 2; touch "$dir/cont-go"
    wait "$helper"
  else
    qmp "$dir/run/qmp.sock" cont
  fi
  local running; running=$(since "$t0")
  touch "$dir/go"
  local ready=-
  if [ -n "$probe" ]; then
    wait "$probe" || { echo "fast-start-bench: vrnetlab's way: no SSH banner" >&2; exit 1; }
    ready=$(cat "$dir/t.banner")
  fi
  local traffic; traffic=$(got "$dir/t.vrnetlab" "$t0" "vrnetlab-way traffic")
  if [ "$how" = as-run ]; then
    a_ready+=("$ready"); a_traffic+=("$traffic")
  else
    v_running+=("$running"); v_ready+=("$ready"); v_traffic+=("$traffic")
  fi
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=
  ip netns exec "$ns" "$bin" unwire eth1=tap1 >/dev/null
  ip -n "$ns" link del tap1
  # qemu ran as root here: its sockets would stand in the way of the sandboxed qemu's next run.
  rm -rf "$dir/x" "$dir"/run/*
}

# The launcher's argv (`launcher check`) as qemu runs outside it: the RAM as RAM (an
# `-object memory-backend-*` value of its own: MEM), the data NIC as NET, the serial port to
# nowhere, and no -sandbox (vrnetlab runs qemu as root without a seccomp filter; ours denies
# spawn, which `exec:cat` needs), its agent socket beside the run dir. Into the array `a`.
plain_argv() {
  local mem=$1 net=$2 x skip=; a=()
  while IFS= read -r x; do
    if [ -n "$skip" ]; then skip=; continue; fi
    if [ "$x" = -sandbox ]; then skip=1; continue; fi
    case "$x" in
      memory-backend-*) x="$mem,size=$(sed -n 's/.*size=\([^,]*\).*/\1/p' <<<"$x")" ;;
      tap,id=net1,*) x=$net ;;
      socket,id=serial*) x="null,id=${x#socket,id=}"; x=${x%%,server=*} ;;
      # Its own agent socket, outside the launcher's run dir: a root qemu killed there would
      # leave a socket the sandboxed qemu of the next restore may not replace.
      socket,id=qga*) x="${x%%path=*}path=$dir/plain-qga.sock" ;;
    esac
    a+=("$x")
  done < <(CLAB_INTFS=1 "$bin" check --config "$dir/launcher.toml")
}

# full_stream DIR: in the extracted snapshot DIR, vrnetlab's kind of stream (RAM included,
# uncompressed) as memory.raw beside our parts: a qemu whose RAM is a file filled with our
# RAM loads our devices' stream, then migrates everything to a file.
full_stream() {
  local d; d=$(dirname "$(find "$1" -name devices.zst)")
  # Our RAM's parts (ram.0.lz4, ram.1.lz4, ...), each its data at its extents (manifest.json),
  # make the RAM image: a sparse file of the RAM's size.
  python3 - "$1" "$d" <<'PY'
import json, os, subprocess, sys
top, d = sys.argv[1:]
vm = json.load(open(os.path.join(top, "manifest.json")))["vms"][0]
size = int(vm["key"]["memory"].rstrip("M")) << 20
with open(os.path.join(d, "ram.img"), "wb") as img:
    img.truncate(size)
    for part in vm["ram"]:
        z = subprocess.Popen(["lz4", "-q", "-d", "-c", os.path.join(top, part["member"])], stdout=subprocess.PIPE)
        for at, n in part["extents"]:
            img.seek(at); img.write(z.stdout.read(n))
        assert z.stdout.read(1) == b"" and z.wait() == 0, part["member"]
PY
  rm -f "$d"/ram.*.lz4
  zstd -q -d --rm "$d/devices.zst" -o "$d/devices.raw"
  # Its data NIC on a tap of its own in the bench's namespace (the device state wants a
  # backend with vnet_hdr, as the launcher's taps have).
  plain_argv "memory-backend-file,id=ram0,mem-path=$d/ram.img,share=on" \
    "tap,id=net1,ifname=prep1,script=no,downscript=no,vnet_hdr=on"
  local q=("${a[@]/unix:*qmp.sock,server=on,wait=off/unix:$d/prep.sock,server=on,wait=off}")
  ip netns exec "$ns" "${q[@]}" -incoming defer >>"$dir/launcher.log" 2>&1 &
  local prep=$!
  qmp "$d/prep.sock" "full:$d/devices.raw:$d/memory.raw"
  # It was told to quit; once it did not (the stream was written): bounded, then killed.
  local i=0
  while kill -0 "$prep" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -9 "$prep" 2>/dev/null || true
  wait "$prep" || true
  rm -f "$d/ram.img" "$d/devices.raw" "$d/prep.sock"
  [ -s "$d/memory.raw" ] || { echo "fast-start-bench: vrnetlab's stream was not made" >&2; exit 1; }
}

# vrnetlab's restore, with the same device ABI and the same tc wiring: qemu run directly with
# the launcher's argv, its RAM as plain RAM, the data NIC on a tap wired by `launcher wire`, and
# `-incoming "exec:cat STREAM"` (an uncompressed stream).
vrnetlab_qemu() {
  plain_argv "memory-backend-ram,id=ram0" "tap,id=net1,ifname=tap1,script=no,downscript=no"
  mkdir -p "$dir/run"
  ip netns exec "$ns" "$bin" wire eth1=tap1 >/dev/null
  ip netns exec "$ns" "${a[@]}" -incoming "exec:cat $1" >>"$dir/launcher.log" 2>&1 &
  pid=$!
}

# The overlay a saved disk goes back to: the Nth disk qemu opens in the state dir (the
# overlays, in the plan's order), from the launcher's own argv.
overlay_of() {
  local n; n=$(basename "$1" .qcow2); n=${n#disk}
  CLAB_INTFS=1 "$bin" check --config "$dir/launcher.toml" 2>/dev/null \
    | grep -o "format=qcow2,file=$dir/state/[^,]*" | sed -n "$((n+1))p" | cut -d= -f3
}

sc=$dir/startup-config.cfg
echo "ip addr add 192.0.2.2/24 dev eth1" >"$sc"
cat >"$dir/launcher.toml" <<EOF2
[vm]
name = "tinylinux"
machine = "q35"
memory = 256
shutdown_timeout = 20
boot_timeout = 300
startup_config = "$sc"
[kernel]
path = "$build/vmlinuz"
initrd = "$build/initramfs.cpio.gz"
append = "console=ttyS0 panic=-1 tl.mgmt=user tl.hostname=bench"
[management]
forwards = []
[console]
ready_pattern = "TINYLINUX-READY"
log = "$dir/console.log"
[paths]
run_dir = "$dir/run"
state_dir = "$dir/state"
health_file = "$dir/health"
EOF2
target=192.0.2.2 ready_port=
[ "${TINYLINUX:-1}" = 0 ] || bench "tinylinux (256 MiB, 1 vCPU, TCG)"

# The Debian guest: DEBIAN_QCOW2 (else the cached build of images/debian, when it is built;
# DEBIAN=0 skips it), with the config below unless DEBIAN_CONFIG names another.
if [ -z "${DEBIAN_QCOW2:-}" ] && [ "${DEBIAN:-1}" != 0 ]; then
  DEBIAN_QCOW2=$(images/debian/build.sh 2>/dev/null | tail -1 || true)
fi
if [ -n "${DEBIAN_QCOW2:-}" ] && [ -z "${DEBIAN_CONFIG:-}" ]; then
  DEBIAN_CONFIG=$dir/debian.toml.in
  printf 'interface eth1\n ip address 192.0.2.2/24\n' >"$dir/frr.conf"
  vm='startup_config = "{dir}/frr.conf"\nclock = "guest-agent"'
  sed -e "s|{vm}|$vm|" -e "s|{img}|$(dirname "$DEBIAN_QCOW2")|g" -e "s|{seed}|$PWD/images/debian/seed|g" \
    images/debian/host.toml.in >"$DEBIAN_CONFIG"
fi
if [ -n "${DEBIAN_QCOW2:-}" ]; then
  [ -f "$DEBIAN_QCOW2" ] || { echo "fast-start-bench: DEBIAN_QCOW2=$DEBIAN_QCOW2 is no file" >&2; exit 1; }
  [ -f "${DEBIAN_CONFIG:-}" ] || { echo "fast-start-bench: DEBIAN_CONFIG must name a launcher.toml for that guest ({qcow2}, {dir} substituted; its eth1 at DEBIAN_PING)" >&2; exit 1; }
  sed -e "s|{qcow2}|$DEBIAN_QCOW2|g" -e "s|{dir}|$dir|g" "$DEBIAN_CONFIG" >"$dir/launcher.toml"
  target=${DEBIAN_PING:-192.0.2.2}
  ready_port=$(sed -n 's/^ready_tcp *= *\([0-9]*\).*/\1/p' "$dir/launcher.toml")
  bench "Debian 12 + FRR (1 GiB, 1 vCPU, TCG; $DEBIAN_QCOW2)"
fi
