#!/usr/bin/env bash
# Builds the container images: debian:bookworm-slim (locally if needed), launcher-base from
# Dockerfile.base with the release binary, the tinylinux router image, and the Debian + FRR
# router image (its guest cached under /var/cache/launcher by a hash of its recipe).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ -x target/release/launcher ] || cargo build --release
scripts/debian-base.sh
docker build -q --network host -f Dockerfile.base -t launcher-base:latest . >/dev/null
docker build -q --network host -t launcher-tinylinux:latest images/tinylinux >/dev/null
images/debian/image.sh
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(debian:bookworm-slim|launcher-base|launcher-tinylinux|launcher-debian)'
