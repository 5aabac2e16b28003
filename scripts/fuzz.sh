#!/usr/bin/env bash
# scripts/fuzz.sh — builds and runs the libFuzzer targets of fuzz/ (docs/development.md#fuzzing)
# on stable Rust, without cargo-fuzz: the very flags `cargo fuzz build --sanitizer none` passes,
# given to cargo directly.
#
#   scripts/fuzz.sh build                 builds every target into target/fuzz/
#   scripts/fuzz.sh run SECONDS [TARGET...]
#                                         builds, then runs each target (default: all) for
#                                         SECONDS on its corpus; fails on the first crash
#   scripts/fuzz.sh list                  the targets
#
# A run reads fuzz/corpus/<target>/ (the checked-in seeds) and fuzz/regressions/<target>/ (inputs
# that once crashed), and writes what it finds new to target/fuzz/corpus/<target>/, never to the
# checked-in directories. A crashing input lands in fuzz/artifacts/<target>/ (gitignored); the
# log of each run is target/fuzz/logs/<target>.log. Installs Debian's g++ as root when no C++
# compiler is found (libfuzzer-sys compiles libFuzzer).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
TALLY_SCRIPT=fuzz.sh
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"

FUZZ_DIR="$ROOT_DIR/fuzz"
OUT_DIR="$ROOT_DIR/target/fuzz"
CARGO="${CARGO:-cargo}"

targets() { sed -n 's/^name = "\([a-z_]*\)"$/\1/p' "$FUZZ_DIR/Cargo.toml" | grep -vx tally-fuzz; }

# The profile `fuzz` of fuzz/Cargo.toml: optimised, with debug assertions, overflow checks and
# line tables for the backtraces.
PROFILE=fuzz

build() {
  need_packages c++ g++
  local host
  host="$(rustc -vV | sed -n 's/^host: //p')"
  # `--target` keeps these flags off build scripts and proc macros (cargo-fuzz does the same).
  local flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    -Cllvm-args=-sanitizer-coverage-stack-depth
    --cfg fuzzing
  )
  tally_log "building the fuzz targets ($PROFILE profile, $host)"
  local started=$SECONDS
  unset CARGO_ENCODED_RUSTFLAGS
  RUSTFLAGS="${flags[*]} ${FUZZ_RUSTFLAGS:-}" "$CARGO" build --locked \
    --manifest-path "$FUZZ_DIR/Cargo.toml" --target-dir "$OUT_DIR" --target "$host" \
    --profile "$PROFILE" --bins
  tally_log "built in $((SECONDS - started)) s"
  BIN_DIR="$OUT_DIR/$host/$PROFILE"
}

# One line of the last libFuzzer status line of a log: runs, coverage, features, corpus.
summary() {
  local log="$1" stats
  stats="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
  printf '%s\n' "$stats" | sed -E 's/^#([0-9]+)[[:space:]]+[A-Z]+[[:space:]]+/\1 execs, /; s/ +/ /g'
}

run_one() {
  local target="$1" seconds="$2"
  local seeds="$FUZZ_DIR/corpus/$target" regressions="$FUZZ_DIR/regressions/$target"
  local work="$OUT_DIR/corpus/$target" artifacts="$FUZZ_DIR/artifacts/$target"
  local log="$OUT_DIR/logs/$target.log"
  [[ -d "$seeds" ]] || tally_die "no seed corpus $seeds"
  mkdir -p "$work" "$artifacts" "$(dirname "$log")"
  local dirs=("$work" "$seeds")
  [[ -d "$regressions" ]] && dirs+=("$regressions")
  # The new inputs go to the first directory: the scratch corpus under target/.
  if RUST_BACKTRACE=1 "$BIN_DIR/$target" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" "${dirs[@]}" \
    >"$log" 2>&1; then
    printf '%-14s %3s s: %s\n' "$target" "$seconds" "$(summary "$log")"
  else
    tally_log "$target FAILED; the end of $log:"
    tail -n 60 "$log" >&2
    tally_die "$target crashed: the input is in $artifacts/ (keep it in fuzz/regressions/$target/ once fixed)"
  fi
}

case "${1:-}" in
  list) targets ;;
  build) build ;;
  run)
    seconds="${2:?scripts/fuzz.sh run SECONDS [TARGET...]}"
    shift 2
    chosen=("$@")
    if [[ ${#chosen[@]} -eq 0 ]]; then mapfile -t chosen < <(targets); fi
    for target in "${chosen[@]}"; do
      targets | grep -qx "$target" || tally_die "no fuzz target $target (scripts/fuzz.sh list)"
    done
    build
    for target in "${chosen[@]}"; do run_one "$target" "$seconds"; done
    tally_log "${#chosen[@]} targets ran ${seconds} s each without a crash"
    ;;
  *)
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
