#!/usr/bin/env bash
# Builds the tinylinux router guest from Debian packages only:
#   build/vmlinuz          the cloud kernel (virtio, bonding, 8021q, bridge, button as modules)
#   build/initramfs.cpio.gz busybox-static + the modules + rootfs/ (init scripts)
# No arguments. Idempotent: re-running rebuilds the initramfs, reuses downloaded packages.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/build"
work="$out/work"
mkdir -p "$out" "$work"

need() { command -v "$1" >/dev/null || { echo "build.sh: '$1' is missing (apt-get install $2)" >&2; exit 1; }; }
need apt-get apt; need dpkg-deb dpkg; need cpio cpio; need depmod kmod; need modprobe kmod; need gzip gzip; need openssl openssl

# The versioned kernel package behind the cloud metapackage.
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$kpkg" ]; then
  apt-get update -qq
  kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
[ -n "$kpkg" ] || { echo "build.sh: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }

cd "$work"
for p in "$kpkg" busybox-static; do
  ls ./"${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p" 2>/dev/null || { apt-get update -qq && apt-get download "$p"; }
done
rm -rf kroot bbroot initrd
dpkg-deb -x "$(ls ./"${kpkg}"_*.deb | head -1)" kroot
dpkg-deb -x "$(ls ./busybox-static_*.deb | head -1)" bbroot
kver=$(ls kroot/lib/modules | head -1)
depmod -b kroot "$kver"

mkdir -p initrd/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,root,lib/modules,etc,var/log}
cp bbroot/bin/busybox initrd/bin/busybox
# Modules in dependency order, loaded by /etc/init.d/rcS from /etc/modules.
: > initrd/etc/modules
for m in virtio_pci virtio_net virtio_blk bonding 8021q bridge button evdev qemu_fw_cfg vfat nls_cp437 nls_ascii virtio_scsi sr_mod isofs; do
  modprobe -d kroot -S "$kver" --show-depends "$m" | awk '$1=="insmod"{print $2}' | while read -r ko; do
    base=$(basename "$ko")
    grep -qx "$base" initrd/etc/modules || { cp "$ko" initrd/lib/modules/; echo "$base" >> initrd/etc/modules; }
  done
done
cp -a "$here/rootfs/." initrd/
chmod +x initrd/init initrd/etc/init.d/* initrd/etc/acpi/PWRF/*
# Default credentials admin/admin (documented in images/tinylinux/README.md).
hash=$(openssl passwd -6 -salt tinylinux admin)
printf 'root:x:0:0:root:/root:/bin/sh\nadmin:x:0:0:admin:/root:/bin/sh\n' > initrd/etc/passwd
printf 'root:%s:1::::::\nadmin:%s:1::::::\n' "$hash" "$hash" > initrd/etc/shadow
chmod 600 initrd/etc/shadow
printf 'root:x:0:\n' > initrd/etc/group

(cd initrd && find . | cpio -o -H newc --quiet | gzip -6) > "$out/initramfs.cpio.gz.tmp"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
cp "kroot/boot/vmlinuz-$kver" "$out/vmlinuz"
echo "tinylinux: built $out/vmlinuz ($kver) and $out/initramfs.cpio.gz ($(du -h "$out/initramfs.cpio.gz" | cut -f1))"
