#!/usr/bin/env bash
# The demo lab: two tinylinux routers, r1 and r2, linked back to back by two links the way
# containerlab does it (containers started first, then veth pairs moved in as eth1/eth2).
# The guests bond both links with LACP (802.3ad) and ping each other over the bond.
#   scripts/demo.sh up      build what is missing, start the lab, wait for the bond, show status
#   scripts/demo.sh links R re-create R's links (after `docker start R`)
#   scripts/demo.sh down    remove the lab
# And a routing lab of Debian 12 + FRR routers (images/debian), slower to boot (minutes under TCG):
#   scripts/demo.sh up frr    r1, r2, r3 in a ring (eth1, eth2) plus an LACP bond r1-r2 (eth3+eth4);
#                             OSPF, IS-IS, BFD on every link, iBGP over loopbacks, LLDP; waits until
#                             all are up, as each router's own tools (vtysh, lldpcli) show it
#   scripts/demo.sh cut frr   deletes r1's eth1 (then re-adds it) and shows OSPF before/after
#   scripts/demo.sh down frr  remove it
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
LAB=${LAB:-demo}
cfgdir=/tmp/launcher-$LAB

startup_config() { # $1 = own address
  cat <<CFG
B=/sys/class/net/bond0/bonding
[ -d \$B ] || echo +bond0 > /sys/class/net/bonding_masters
ip link set bond0 down
echo 802.3ad > \$B/mode; echo fast > \$B/lacp_rate; echo 100 > \$B/miimon
for i in eth1 eth2; do ip link set \$i down; echo +\$i > \$B/slaves; done
ip link set bond0 up
ip addr add $1/24 dev bond0
(
  n=0
  while [ \$n -lt 600 ]; do
    p=\$(cat \$B/ad_partner_mac)
    a1=\$(cat /sys/class/net/eth1/bonding_slave/ad_aggregator_id)
    a2=\$(cat /sys/class/net/eth2/bonding_slave/ad_aggregator_id)
    if [ "\$p" != 00:00:00:00:00:00 ] && [ "\$a1" = "\$a2" ] && ping -c 1 -W 1 \$(cat /run/peer) >/dev/null 2>&1; then
      echo "LAB-BOND-UP mac=\$(cat /sys/class/net/bond0/address) partner=\$p aggregator=\$(cat \$B/ad_aggregator) eth1_agg=\$a1 eth2_agg=\$a2"
      break
    fi
    sleep 1; n=\$((n+1))
  done
) &
CFG
}

pid_of() { docker inspect -f '{{.State.Pid}}' "$LAB-$1"; }

# Re-creates both links between r1 and r2 (as containerlab does): veth pairs in the host,
# moved into the containers' network namespaces and named eth1/eth2 there.
links() {
  local p1 p2
  p1=$(pid_of r1); p2=$(pid_of r2)
  for i in 1 2; do
    nsenter -t "$p1" -n ip link del "eth$i" 2>/dev/null || true
    nsenter -t "$p2" -n ip link del "eth$i" 2>/dev/null || true
    ip link del "$LAB-a$i" 2>/dev/null || true
    ip link add "$LAB-a$i" type veth peer name "$LAB-b$i"
    ip link set "$LAB-a$i" netns "$p1"
    ip link set "$LAB-b$i" netns "$p2"
    nsenter -t "$p1" -n ip link set "$LAB-a$i" name "eth$i" mtu 9500 up
    nsenter -t "$p2" -n ip link set "$LAB-b$i" name "eth$i" mtu 9500 up
  done
}

up() {
  source scripts/deps.sh
  [ -f images/tinylinux/build/vmlinuz ] || images/tinylinux/build.sh
  docker image inspect launcher-tinylinux:latest >/dev/null 2>&1 || { cargo build --release; scripts/images.sh; }
  down >/dev/null 2>&1 || true
  mkdir -p "$cfgdir/r1" "$cfgdir/r2"
  { echo "echo 192.0.2.2 > /run/peer"; startup_config 192.0.2.1; } > "$cfgdir/r1/startup-config.cfg"
  { echo "echo 192.0.2.1 > /run/peer"; startup_config 192.0.2.2; } > "$cfgdir/r2/startup-config.cfg"
  for r in r1 r2; do
    docker create --name "$LAB-$r" --hostname "$r" \
      --cap-add NET_ADMIN --device /dev/net/tun \
      -e CLAB_INTFS=2 -v "$cfgdir/$r:/config" \
      launcher-tinylinux:latest >/dev/null
    docker start "$LAB-$r" >/dev/null
  done
  links
  echo "demo: waiting for the LACP bond and ping over it"
  for r in r1 r2; do
    for _ in $(seq 1 180); do
      docker logs "$LAB-$r" 2>/dev/null | grep -q LAB-BOND-UP && break
      sleep 1
    done
    docker logs "$LAB-$r" 2>/dev/null | grep LAB-BOND-UP | tail -1 | sed "s/^/$r: /" || { echo "demo: $r: no bond" >&2; exit 1; }
  done
  for r in r1 r2; do docker exec "$LAB-$r" launcher status; done
}

down() {
  docker rm -f "$LAB-r1" "$LAB-r2" >/dev/null 2>&1 || true
  rm -rf "$cfgdir"
}

# ---- the FRR lab (images/debian) ----
FRR_ROUTERS="r1 r2 r3"
# Links: "rA ethX rB ethY subnet" (a ring, then the two bond members).
FRR_LINKS="r1 eth1 r2 eth1 10.1.12
r2 eth2 r3 eth1 10.1.23
r3 eth2 r1 eth2 10.1.13
r1 eth3 r2 eth3 -
r1 eth4 r2 eth4 -"

# FRR's configuration for router $1 (number n): its addresses come from FRR_LINKS, the bond
# r1-r2 is 10.2.12.0/24; OSPF point-to-point, 1 s hellos, BFD; IS-IS L2; iBGP over loopbacks.
frr_conf() {
  local r=$1 n=${1#r} iface
  printf 'frr defaults traditional\nhostname %s\nservice integrated-vtysh-config\n!\n' "$r"
  printf 'bfd\n profile lab\n  receive-interval 1000\n  transmit-interval 1000\n  detect-multiplier 5\n!\n'
  printf 'interface lo\n ip address 10.255.0.%s/32\n ip ospf area 0\n ip router isis lab\n isis passive\n!\n' "$n"
  frr_ifaces "$r" | while read -r iface addr; do
    printf 'interface %s\n ip address %s/24\n ip ospf area 0\n ip ospf network point-to-point\n' "$iface" "$addr"
    printf ' ip ospf hello-interval 1\n ip ospf dead-interval 4\n ip ospf bfd\n ip ospf bfd profile lab\n'
    printf ' ip router isis lab\n isis network point-to-point\n isis hello-interval 1\n isis bfd\n isis bfd profile lab\n!\n'
  done
  printf 'router ospf\n ospf router-id 10.255.0.%s\n!\n' "$n"
  printf 'router isis lab\n net 49.0001.0000.0000.000%s.00\n is-type level-2-only\n!\n' "$n"
  printf 'router bgp 65000\n bgp router-id 10.255.0.%s\n' "$n"
  for p in $FRR_ROUTERS; do
    [ "$p" = "$r" ] && continue
    printf ' neighbor 10.255.0.%s remote-as 65000\n neighbor 10.255.0.%s update-source lo\n' "${p#r}" "${p#r}"
  done
  printf ' address-family ipv4 unicast\n  network 10.255.0.%s/32\n exit-address-family\n!\n' "$n"
}

# "iface address" per routed interface of $1 (the bond's members are bond0's).
frr_ifaces() {
  echo "$FRR_LINKS" | while read -r a ea b eb net; do
    [ "$net" = - ] && continue
    [ "$a" = "$1" ] && echo "$ea $net.${1#r}"
    [ "$b" = "$1" ] && echo "$eb $net.${1#r}"
  done
  case $1 in r1|r2) echo "bond0 10.2.12.${1#r}" ;; esac
}

# The seed: the image's user-data and meta-data; r1 and r2 add the bond to network-config.
frr_seed() {
  local d=$cfgdir/$1/seed
  mkdir -p "$d"
  cp images/debian/seed/user-data images/debian/seed/meta-data "$d/"
  cp images/debian/seed/network-config "$d/"
  case $1 in r1|r2) cat >> "$d/network-config" <<'NC'
  eth3: {}
  eth4: {}
bonds:
  bond0:
    interfaces: [eth3, eth4]
    parameters:
      mode: 802.3ad
      lacp-rate: fast
      mii-monitor-interval: 100
NC
  esac
}

# Creates the links (all, or only number $1 of FRR_LINKS), deleting what was there.
frr_links() {
  local a ea b eb net pa pb i=0
  echo "$FRR_LINKS" | while read -r a ea b eb net; do
    i=$((i + 1))
    [ -n "${1:-}" ] && [ "$1" != "$i" ] && continue
    pa=$(pid_of "$a"); pb=$(pid_of "$b")
    nsenter -t "$pa" -n ip link del "$ea" 2>/dev/null || true
    ip link add "$LAB-f$i" type veth peer name "$LAB-g$i"
    ip link set "$LAB-f$i" netns "$pa"; ip link set "$LAB-g$i" netns "$pb"
    nsenter -t "$pa" -n ip link set "$LAB-f$i" name "$ea" mtu 9500 up
    nsenter -t "$pb" -n ip link set "$LAB-g$i" name "$eb" mtu 9500 up
  done
}

# Runs $2 in router $1's guest over SSH (admin/admin, password login).
frr_ssh() {
  local ip askpass=$cfgdir/askpass
  ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$LAB-$1")
  SSH_ASKPASS=$askpass SSH_ASKPASS_REQUIRE=force DISPLAY=:0 timeout 60 ssh -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o PubkeyAuthentication=no -o LogLevel=ERROR -o ConnectTimeout=10 \
    "admin@$ip" "$2" </dev/null
}

# What r1's own tools say, and whether it shows everything up: three OSPF neighbours Full, three
# IS-IS adjacencies Up, both iBGP sessions established (a prefix count, not a state, in the last
# column), three BFD peers up, four LLDP neighbours (r2 twice over the bond, r2 and r3).
FRR_PROBE="sudo vtysh -c 'show ip ospf neighbor' -c 'show isis neighbor' -c 'show bgp summary' -c 'show bfd peers brief'; sudo lldpcli show neighbors summary; grep -E 'Mode|Aggregator ID|Partner Mac' /proc/net/bonding/bond0"
frr_all_up() {
  [ "$(echo "$1" | grep -c 'Full/')" -ge 3 ] \
    && [ "$(echo "$1" | grep -cE '^ +[^ ]+ +[^ ]+ +[12] +Up +[0-9]+ ')" -ge 3 ] \
    && [ "$(echo "$1" | grep -cE '^10\.255\.0\.[0-9]+ +4 +65000 +([0-9]+ +){5}[0-9:dhmw]+ +[0-9]+ ')" -ge 2 ] \
    && [ "$(echo "$1" | grep -c ' up ')" -ge 3 ] && [ "$(echo "$1" | grep -c 'SysName:')" -ge 4 ]
}

frr_up() {
  source scripts/deps.sh
  docker image inspect launcher-debian:latest >/dev/null 2>&1 || { cargo build --release; scripts/images.sh; }
  frr_down >/dev/null 2>&1 || true
  mkdir -p "$cfgdir"
  printf '#!/bin/sh\necho admin\n' > "$cfgdir/askpass"; chmod 755 "$cfgdir/askpass"
  local t0 r n
  t0=$(date +%s)
  for r in $FRR_ROUTERS; do
    frr_seed "$r"
    frr_conf "$r" > "$cfgdir/$r/startup-config.cfg"
    n=$(echo "$FRR_LINKS" | awk -v r="$r" '$1==r || $3==r' | wc -l)
    docker run -d --name "$LAB-$r" --hostname "$r" --cap-add NET_ADMIN --device /dev/net/tun \
      -e CLAB_INTFS="$n" -v "$cfgdir/$r:/config" -v "$cfgdir/$r/seed:/etc/launcher/seed:ro" \
      launcher-debian:latest >/dev/null
  done
  frr_links
  echo "demo: waiting for the routers (cloud-init and SSH; minutes under TCG)"
  for r in $FRR_ROUTERS; do
    for _ in $(seq 1 450); do docker exec "$LAB-$r" launcher health >/dev/null 2>&1 && break; sleep 2; done
    docker exec "$LAB-$r" launcher health >/dev/null || { echo "demo: $r is not ready" >&2; exit 1; }
  done
  echo "demo: ready after $(( $(date +%s) - t0 )) s; waiting for OSPF, IS-IS, BGP, BFD, LLDP, the bond"
  local out up=no
  for _ in $(seq 1 100); do
    out=$(frr_ssh r1 "$FRR_PROBE" 2>/dev/null || true)
    frr_all_up "$out" && { up=yes; break; }
    sleep 3
  done
  echo "$out"
  [ "$up" = yes ] || { echo "demo: not every protocol is up on r1 after $(( $(date +%s) - t0 )) s" >&2; exit 1; }
  echo "demo: all up after $(( $(date +%s) - t0 )) s"
  for r in $FRR_ROUTERS; do docker exec "$LAB-$r" launcher status; done
}

# Waits (bounded, $1 tries 2 s apart) until r1 shows $2 OSPF neighbours Full; prints them.
frr_wait_ospf() {
  local out
  for _ in $(seq 1 "$1"); do
    out=$(frr_ssh r1 "sudo vtysh -c 'show ip ospf neighbor' -c 'show bfd peers brief'" 2>/dev/null || true)
    [ "$(echo "$out" | grep -c 'Full/')" = "$2" ] && { echo "$out"; return 0; }
    sleep 2
  done
  echo "$out"; echo "demo: r1 does not show $2 OSPF neighbours Full" >&2; return 1
}

frr_cut() {
  echo "demo: r1 before the cut"; frr_wait_ospf 1 3
  nsenter -t "$(pid_of r1)" -n ip link del eth1
  local t=$(date +%s)
  echo "demo: r1 with eth1 deleted"; frr_wait_ospf 60 2
  echo "demo: the cut was seen in about $(( $(date +%s) - t )) s"
  frr_links 1; t=$(date +%s)
  echo "demo: r1 with eth1 back"; frr_wait_ospf 90 3
  echo "demo: recovered in about $(( $(date +%s) - t )) s"
}

frr_down() {
  for r in $FRR_ROUTERS; do docker rm -f "$LAB-$r" >/dev/null 2>&1 || true; done
  rm -rf "$cfgdir"
}

case "${1:-up} ${2:-}" in
  "up frr") LAB=$LAB-frr; cfgdir=/tmp/launcher-$LAB; frr_up ;;
  "cut frr") LAB=$LAB-frr; cfgdir=/tmp/launcher-$LAB; frr_cut ;;
  "down frr") LAB=$LAB-frr; cfgdir=/tmp/launcher-$LAB; frr_down ;;
  "up ") up ;;
  "links "*) links ;;
  "down ") down ;;
  *) echo "usage: $0 up|links|down, or up|cut|down frr" >&2; exit 2 ;;
esac
