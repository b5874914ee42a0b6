#!/usr/bin/env bash
# The demo lab: two tinylinux routers, r1 and r2, linked back to back by two links the way
# containerlab does it (containers started first, then veth pairs moved in as eth1/eth2).
# The guests bond both links with LACP (802.3ad) and ping each other over the bond.
#   scripts/demo.sh up      build what is missing, start the lab, wait for the bond, show status
#   scripts/demo.sh links R re-create R's links (after `docker start R`)
#   scripts/demo.sh down    remove the lab
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

case "${1:-up}" in
  up) up ;;
  links) links ;;
  down) down ;;
  *) echo "usage: $0 up|links|down" >&2; exit 2 ;;
esac
