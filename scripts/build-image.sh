#!/usr/bin/env bash
# scripts/build-image.sh KIND FILE...: builds the router image of platform images/KIND from the
# vendor's file(s), as vrnetlab's `make` does, and tags it vrnetlab/KIND:VERSION, the version
# taken from the (first) file's name. images/KIND/build.conf says how: VERSION_SED (a sed -E
# expression printing the version from the file name) and DISKS (the name each file takes in
# /images, in order). The image is launcher-base:latest (BASE overrides) plus the files, the
# platform's folder and the shared pieces (images/_shared) under /etc/launcher.
# INSTALL=1 in build.conf adds vrnetlab's install phase: the image built is run once with
# `launcher install` (docker run --cap-add NET_ADMIN --device /dev/net/tun, LAUNCHER_ACCEL
# passed on when set), and the stopped container is committed as the tag with the image's own
# ENTRYPOINT and CMD back. A failed install leaves no tag (and no container or build image).
# INSTALL_CONFIG=FILE in build.conf: the install runs with images/KIND/FILE (a config including
# launcher.toml with the install-time differences, e.g. another CD) instead of the image's
# config (LAUNCHER_CONFIG of its Dockerfile).
# NO_INSTALL=1 in the environment skips the install phase (said on stderr): the image is tagged
# as built, and boots the vendor's fresh disk (the build test's blank placeholders, which can
# never finish an install).
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "build-image.sh: $*" >&2; exit 2; }
[ $# -ge 2 ] || die "usage: scripts/build-image.sh KIND FILE... (KIND: $(cd images && ls -d */ | tr -d / | grep -v -e _shared -e tinylinux -e debian | tr '\n' ' '))"
kind=$1; shift
dir=images/$kind
[ -f "$dir/build.conf" ] && [ -f "$dir/launcher.toml" ] || die "$kind: no platform folder images/$kind with build.conf and launcher.toml"
VERSION_SED=; DISKS=(); INSTALL=0; INSTALL_CONFIG=
# shellcheck source=/dev/null
source "$dir/build.conf"
install_args=(install)
if [ -n "$INSTALL_CONFIG" ]; then
  [ -f "$dir/$INSTALL_CONFIG" ] || die "$kind: build.conf: INSTALL_CONFIG=$INSTALL_CONFIG: no such file in $dir"
  install_args+=(--config "/etc/launcher/$kind/$INSTALL_CONFIG")
fi
if [ "$INSTALL" = 1 ] && [ "${NO_INSTALL:-0}" = 1 ]; then
  echo "build-image.sh: $kind: install phase skipped (NO_INSTALL=1): the image boots the fresh vendor disk" >&2
  INSTALL=0
fi
[ $# -eq ${#DISKS[@]} ] || die "$kind takes ${#DISKS[@]} file(s) (${DISKS[*]}), got $#"
for f in "$@"; do [ -f "$f" ] || die "$f: no such file"; done
version=$(basename "$1" | sed -nE "$VERSION_SED" | head -n1)
[ -n "$version" ] || die "$1: no version in this file name (expected: $VERSION_SED)"
tag="vrnetlab/$kind:$version"
ctx=$(mktemp -d "${TMPDIR:-/tmp}/build-image-$kind.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/images" "$ctx/launcher"
cp -r "$dir" "$ctx/launcher/$kind"
rm -rf "$ctx/launcher/$kind/dialog"
cp -r images/_shared "$ctx/launcher/_shared"
i=0
for f in "$@"; do
  # A hard link when on the same filesystem (vendor images are gigabytes), else a copy.
  ln "$f" "$ctx/images/${DISKS[$i]}" 2>/dev/null || cp "$f" "$ctx/images/${DISKS[$i]}"
  i=$((i + 1))
done
build_tag=$tag
[ "$INSTALL" = 1 ] && build_tag="build-image-install/$kind:$version-$$"
docker build -q --network none --build-arg "BASE=${BASE:-launcher-base:latest}" \
  --build-arg "VERSION=$version" -f "$dir/Dockerfile" -t "$build_tag" "$ctx" >/dev/null
if [ "$INSTALL" = 1 ]; then
  ctr="build-image-install-$kind-$$"
  trap 'rm -rf "$ctx"; docker rm -f "$ctr" >/dev/null 2>&1 || true; docker rmi "$build_tag" >/dev/null 2>&1 || true' EXIT
  entrypoint=$(docker image inspect "$build_tag" --format '{{json .Config.Entrypoint}}')
  cmd=$(docker image inspect "$build_tag" --format '{{json .Config.Cmd}}')
  [ "$entrypoint" = null ] && entrypoint='[]'
  [ "$cmd" = null ] && cmd='[]'
  echo "build-image.sh: $kind: install phase (launcher install in container $ctr)" >&2
  if ! docker run --name "$ctr" --cap-add NET_ADMIN --device /dev/net/tun \
      ${LAUNCHER_ACCEL:+-e "LAUNCHER_ACCEL=$LAUNCHER_ACCEL"} "$build_tag" "${install_args[@]}" >&2; then
    echo "build-image.sh: $kind: the install failed (its output is above); no image tagged" >&2
    exit 1
  fi
  docker commit --change "ENTRYPOINT $entrypoint" --change "CMD $cmd" "$ctr" "$tag" >/dev/null
fi
echo "$tag"
