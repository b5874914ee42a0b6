#!/usr/bin/env bash
# Builds debian:bookworm-slim locally (debootstrap + docker import) for hosts that reach no
# image registry. The Debian mirror is read from this machine's own apt sources at run time.
set -euo pipefail
docker image inspect debian:bookworm-slim >/dev/null 2>&1 && exit 0
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || { echo "debian-base: no Debian mirror in /etc/apt/sources.list*" >&2; exit 1; }
root=$(mktemp -d /tmp/bookworm-slim.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debian-base: debootstrap bookworm (minbase) from the machine's apt mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*
tar -C "$root" -c . | docker import - debian:bookworm-slim >/dev/null
echo "debian-base: imported debian:bookworm-slim"
