#!/usr/bin/env bash
# Fuzz: runs each cargo-fuzz target of fuzz/ for a set time (nice'd, one job each) and prints,
# per target, the executions, executions per second, corpus size and findings (crash, timeout
# and out-of-memory inputs). A benchmark-style run, not part of scripts/test.sh (too long); the
# inputs it finds go to fuzz/regressions/TARGET/ by hand, where `cargo test --lib` replays them
# (fuzzing::tests::seeds_and_found_inputs_pass) along with the seeds in fuzz/seeds/.
# Usage: scripts/fuzz.sh [SECONDS=60] [TARGET...]   (default: every target)
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The corpus grows in
# $LAUNCHER_FUZZ_DIR (default ~/.cache/launcher-fuzz), outside the repository. Exits 1 when a
# target found something (its input is in that folder, under artifacts/TARGET/).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config qmp telnet console_lines control iso tgz snapshot_tar)
work=${LAUNCHER_FUZZ_DIR:-$HOME/.cache/launcher-fuzz}
mkdir -p "$work"
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz is missing (cargo install cargo-fuzz)" >&2; exit 1; }
rustup toolchain list | grep -q '^nightly' || { echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2; exit 1; }

# The console splitter cuts lines at 4096 bytes: its inputs must be able to exceed that.
max_len() { case $1 in console_lines|iso|tgz|snapshot_tar) echo 20000 ;; config) echo 8192 ;; *) echo 4096 ;; esac; }

nice cargo +nightly fuzz build -O >"$work/build.log" 2>&1 || { echo "fuzz: the targets do not build; see $work/build.log" >&2; exit 1; }
found=0
printf '%-14s %8s %12s %10s %8s %s\n' target seconds execs execs/s corpus findings
for t in "${targets[@]}"; do
  corpus=$work/corpus/$t
  art=$work/artifacts/$t
  mkdir -p "$corpus" "$art"
  log=$work/$t.log
  before=$(find "$art" -type f | wc -l)
  # -fork would hide the stats; one job, stopped after $secs, keeping going after a finding.
  nice cargo +nightly fuzz run -O "$t" "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -max_len="$(max_len "$t")" -print_final_stats=1 \
    -artifact_prefix="$art/" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1 || true
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  after=$(find "$art" -type f | wc -l)
  new=$((after - before))
  size=$(find "$corpus" -type f | wc -l)
  what=none
  if [ "$new" -gt 0 ] || grep -q '^==[0-9]*== ERROR\|panicked at' "$log"; then
    found=1
    what="$new new in $art ($(grep -m1 -o 'panicked at [^:]*:[0-9]*\|ERROR: [a-zA-Z]*: [a-z-]*' "$log" || echo see "$log"))"
  fi
  printf '%-14s %8s %12s %10s %8s %s\n' "$t" "$secs" "${execs:-?}" "${rate:-?}" "$size" "$what"
done
exit $found
