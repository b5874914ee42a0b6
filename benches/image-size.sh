#!/usr/bin/env bash
# Prints the size of launcher-base against a vrnetlab-like base (Debian + Python + qemu), both
# built here on the same local debian:bookworm-slim. Run after scripts/images.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
docker build -q --network host -t vrnetlab-like-base:bench benches/vrnetlab-like >/dev/null 2>&1
for i in debian:bookworm-slim launcher-base:latest vrnetlab-like-base:bench; do
  printf '%-28s %6d MB\n' "$i" $(( $(docker image inspect -f '{{.Size}}' "$i") / 1000000 ))
done
