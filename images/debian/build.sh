#!/usr/bin/env bash
# Builds the Debian 12 + FRR router guest from Debian packages only (debootstrap minbase, no
# recommends): one ext4 filesystem as a qcow2 (no partition table), plus the image's own kernel
# and initrd for qemu's direct kernel boot (root=/dev/vda). Cached outside the repository, by a
# hash of this recipe (this script and rootfs/), under $LAUNCHER_CACHE (default
# /var/cache/launcher): a second run with the same recipe builds nothing.
# The last line on stdout is the cached qcow2's path; the kernel and initrd sit beside it
# (vmlinuz, initrd.img). The Debian mirror is read from this machine's apt sources at run time.
# Needs root (debootstrap, chroot).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${LAUNCHER_CACHE:-/var/cache/launcher}
hash=$( (cat "$here/build.sh"; cd "$here/rootfs" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16)
out="$cache/debian-$hash"
if [ -s "$out/disk.qcow2" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ]; then
  echo "debian: cached (recipe $hash)" >&2
  echo "$out/disk.qcow2"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "debian/build.sh: run as root (debootstrap, chroot)" >&2; exit 1; }
need() { command -v "$1" >/dev/null || { echo "debian/build.sh: '$1' is missing (apt-get install $2)" >&2; exit 1; }; }
need debootstrap debootstrap; need mkfs.ext4 e2fsprogs; need qemu-img qemu-utils
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || { echo "debian/build.sh: no Debian mirror in /etc/apt/sources.list*" >&2; exit 1; }

t0=$(date +%s)
mkdir -p "$cache/debs"
work=$(mktemp -d "$cache/debian-build.XXXXXX")
root="$work/rootfs"
cleanup() {
  for m in var/cache/apt/archives dev/pts dev proc sys; do mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "debian: debootstrap bookworm (minbase) from the machine's apt mirror" >&2
debootstrap --variant=minbase --cache-dir="$cache/debs" \
  --include=systemd,systemd-sysv,udev,dbus,kmod,iproute2,ifupdown,iputils-ping,procps,less \
  bookworm "$root" "$mirror" >/dev/null
t1=$(date +%s)

# Daemons never start inside the chroot.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
# The initramfs holds only what finds and mounts the root disk (host-independent).
mkdir -p "$root/etc/initramfs-tools/conf.d"
printf 'MODULES=list\nCOMPRESS=gzip\n' > "$root/etc/initramfs-tools/conf.d/launcher.conf"
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' > "$root/etc/initramfs-tools/modules"
mount -t proc proc "$root/proc"; mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"; mount --bind /dev/pts "$root/dev/pts"
# Downloaded packages stay in the cache for the next build.
mkdir -p "$cache/debs/partial"; mount --bind "$cache/debs" "$root/var/cache/apt/archives"
cp /etc/resolv.conf "$root/etc/resolv.conf"
echo "debian: apt-get install (no recommends)" >&2
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -q update >/dev/null
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends \
  linux-image-cloud-amd64 initramfs-tools frr lldpd ifenslave openssh-server acpid \
  qemu-guest-agent cloud-init sudo >/dev/null
t2=$(date +%s)

# The recipe's own files: units, cloud-init and lldpd settings, the FRR daemons.
cp -a "$here/rootfs/." "$root/"
chmod 0755 "$root/usr/local/sbin/"*
sed -i -E 's/^(bgpd|ospfd|isisd|bfdd)=no/\1=yes/' "$root/etc/frr/daemons"
# watchfrr's connect and restart time-outs (10 s, 20 s) are too short for a slow TCG boot.
sed -i -E 's/^#?watchfrr_options=.*/watchfrr_options="-t 120 -T 300"/' "$root/etc/frr/daemons"
grep -q '^watchfrr_options=' "$root/etc/frr/daemons" || echo 'watchfrr_options="-t 120 -T 300"' >> "$root/etc/frr/daemons"
chroot "$root" systemctl enable launcher-startup-config.service frr.service lldpd.service >/dev/null 2>&1
for u in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer \
         e2scrub_reap.service systemd-networkd-wait-online.service; do
  chroot "$root" systemctl mask "$u" >/dev/null 2>&1 || true
done
# Every router gets its own identity at first boot: machine id, SSH host keys (cloud-init).
: > "$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_* "$root/var/lib/dbus/machine-id"
printf '/dev/vda / ext4 defaults,noatime 0 1\n' > "$root/etc/fstab"
echo debian > "$root/etc/hostname"
rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf"
for m in var/cache/apt/archives dev/pts dev proc sys; do umount -l "$root/$m"; done
cp -L "$root/vmlinuz" "$work/vmlinuz"; cp -L "$root/initrd.img" "$work/initrd.img"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
  "$root"/var/log/*.log "$root"/tmp/* "$root"/boot/*.bak

echo "debian: ext4 filesystem and qcow2" >&2
# Fixed UUID and hash seed: the same rootfs gives the same filesystem layout.
E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -L root -U 6c61756e-6368-6572-6465-6269616e3132 \
  -E hash_seed=6c61756e-6368-6572-6465-6269616e3132,root_owner=0:0 \
  -d "$root" "$work/disk.raw" 2G
qemu-img convert -q -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
mkdir -p "$out"
mv "$work/disk.qcow2" "$work/vmlinuz" "$work/initrd.img" "$out/"
t3=$(date +%s)
echo "debian: built in $((t3 - t0)) s (debootstrap $((t1 - t0)), apt $((t2 - t1)), image $((t3 - t2))); rootfs $(du -sm "$root" | cut -f1) MiB, qcow2 $(du -m "$out/disk.qcow2" | cut -f1) MiB" >&2
echo "$out/disk.qcow2"
