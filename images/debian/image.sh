#!/usr/bin/env bash
# Builds the router image launcher-debian:latest from the cached guest (build.sh) and the
# launcher base. Skips the build when the image already holds this recipe (label
# launcher.debian.recipe = hash of the guest path + this folder's container files).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=${LAUNCHER_BASE:-launcher-base:latest}   # the launcher base to build on
qcow=$("$here/build.sh" | tail -1)
dir=$(dirname "$qcow")
recipe=$( (echo "$qcow"; cd "$here" && cat Dockerfile container.toml passthrough.toml seed/*; docker image inspect -f "{{.Id}}" "$base") | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "launcher.debian.recipe"}}' launcher-debian:latest 2>/dev/null)" = "$recipe" ]; then
  echo "debian: launcher-debian:latest is current (recipe $recipe)" >&2
  exit 0
fi
ctx=$(mktemp -d "$dir/../lt-debian-ctx.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
ln "$dir/disk.qcow2" "$dir/vmlinuz" "$dir/initrd.img" "$ctx/" 2>/dev/null || cp "$dir/disk.qcow2" "$dir/vmlinuz" "$dir/initrd.img" "$ctx/"
cp -r "$here/seed" "$here/Dockerfile" "$here/container.toml" "$here/passthrough.toml" "$ctx/"
docker build -q --network host --build-arg "BASE=$base" --label "launcher.debian.recipe=$recipe" -t launcher-debian:latest "$ctx" >/dev/null
echo "debian: built launcher-debian:latest (recipe $recipe)" >&2
