#!/usr/bin/env bash
# The one test command: installs what is missing, builds the tinylinux guest and the images,
# then runs every test (unit, golden, netns datapath, qemu, Docker end to end). Needs root.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (network namespaces, tc, taps, Docker)" >&2; exit 1; }
source scripts/deps.sh
images/tinylinux/build.sh
cargo build --release
scripts/images.sh
# One qemu-heavy test binary at a time keeps TCG guests within this machine's two cores.
cargo test --release --no-fail-fast -- --test-threads=2
