#!/usr/bin/env bash
# Every fuzz target (fuzz/, cargo-fuzz and libFuzzer) for FUZZ_SECONDS each (10 by default),
# starting from its committed corpus and seeds. A crash or a failed property fails the run; the
# input that did it is left in fuzz/artifacts/TARGET/ (README, "Tests": fuzzing).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-10}

command -v cargo-fuzz >/dev/null 2>&1 || cargo install --quiet --locked cargo-fuzz
# libFuzzer's instrumentation takes nightly compiler flags. With a nightly toolchain, the default
# build (AddressSanitizer); without one, the stable compiler with RUSTC_BOOTSTRAP and no
# sanitizer, whose runtime only nightly ships — the same coverage-guided search.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly) sanitizer=()
else
  toolchain=() sanitizer=(--sanitizer none)
  export RUSTC_BOOTSTRAP=1
fi
cargo "${toolchain[@]}" fuzz build -O "${sanitizer[@]}"
for target in $(cargo "${toolchain[@]}" fuzz list); do
  # A scratch copy of the corpus: what CI finds is not written into the checkout.
  scratch=$(mktemp -d)
  if [ -d "corpus/$target" ]; then cp -r "corpus/$target/." "$scratch/"; fi
  inputs=("$scratch")
  if [ -d "seeds/$target" ]; then inputs+=("seeds/$target"); fi
  log=$(mktemp)
  if ! cargo "${toolchain[@]}" fuzz run -O "${sanitizer[@]}" "$target" "${inputs[@]}" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target FAILED"
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
  echo "fuzz: $target ok, $runs runs in ${seconds}s"
  rm -rf "$scratch" "$log"
done
