#!/usr/bin/env bash
# Installs what the tests and the demo need (Debian packages), if missing, and starts dockerd
# when no Docker engine answers. Sourced by test.sh and demo.sh.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
missing() {
  need_pkgs=()
  have qemu-system-x86_64 || need_pkgs+=(qemu-system-x86)
  have qemu-img || need_pkgs+=(qemu-utils)
  have cpio || need_pkgs+=(cpio)
  have isoinfo || need_pkgs+=(genisoimage)   # reads the CD images back (src/disks/tests.rs)
  have depmod || need_pkgs+=(kmod)
  have ip || need_pkgs+=(iproute2)
  have tc || need_pkgs+=(iproute2)
  have ping || need_pkgs+=(iputils-ping)
  have ps || need_pkgs+=(procps)
  have openssl || need_pkgs+=(openssl)
  have nsenter || need_pkgs+=(util-linux)
  have ssh || need_pkgs+=(openssh-client)
  have zstd || need_pkgs+=(zstd)   # the launcher compresses a snapshot's device streams with it
  have lz4 || need_pkgs+=(lz4)     # the fast-start bench reads a snapshot's RAM parts with it
  [ -f /usr/share/ovmf/OVMF.fd ] || need_pkgs+=(ovmf)   # cisco_n9kv's UEFI firmware (its golden argv starts in qemu)
  if [ "${NEED_DOCKER:-1}" = 1 ]; then
    have dockerd || need_pkgs+=(docker.io)
    have debootstrap || need_pkgs+=(debootstrap)
    # The second runtime (tests/podman.rs): images are imported from Docker, never pulled.
    have podman || need_pkgs+=(podman)
    have catatonit || need_pkgs+=(catatonit)   # podman's pod infra (kube play) is built with it
  fi
}
# Twice: installing one package can remove another (a backported qemu-utils makes way for
# qemu-system-x86's own version, and qemu-img is gone until it is installed again).
for _ in 1 2; do
  missing
  [ ${#need_pkgs[@]} -gt 0 ] || break
  echo "deps: installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
done
missing
[ ${#need_pkgs[@]} -eq 0 ] || { echo "deps: still missing after installing: ${need_pkgs[*]}" >&2; exit 1; }
[ -c /dev/net/tun ] || { echo "deps: /dev/net/tun is missing" >&2; exit 1; }
if [ "${NEED_DOCKER:-1}" = 1 ] && ! docker info >/dev/null 2>&1; then
  echo "deps: starting dockerd"
  (dockerd >/var/log/dockerd-launcher-tests.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "deps: dockerd did not start, see /var/log/dockerd-launcher-tests.log" >&2; exit 1; }
fi
