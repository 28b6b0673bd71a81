#!/usr/bin/env bash
# Mutation testing of the security core with cargo-mutants (README, "Tests"; the last results are
# in BENCHMARKS.md, "Mutation testing"). Not run by CI: on 2 cores it takes hours for the whole
# core. It runs in a fresh clone of HEAD, so edits in the working tree (and a fuzz corpus that is
# growing) neither disturb it nor get mutated.
#
#   bash tools/mutants.sh                         # the whole core (≈ 1,000 mutants)
#   FILES="src/domain/totp.rs src/token/sealing.rs" bash tools/mutants.sh
#   JOBS=1 bash tools/mutants.sh                  # one build at a time (default 2)
#   FILES=src/auth TESTS="--lib --test api -- --skip git_ignores_key_files" bash tools/mutants.sh
#
# Each mutant is judged by the unit tests next to the code (`--lib`) unless TESTS names other
# `cargo test` arguments: `src/auth/` is tested mostly through the API (`--test api`, real
# servers on SQLite; about half a minute per mutant with the build). cargo-mutants builds in a
# copy of the tree without `.git`, where the one API test that asks git what it ignores cannot
# run: skip it by name, as above. Results land in OUT (default target/mutants), as
# cargo-mutants writes them: caught.txt, missed.txt, unviable.txt, timeout.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

core=(src/token src/crypto src/domain src/auth src/store/revocation_view.rs
      src/store/thread_answers.rs src/store/sqlite/revocation.rs src/store/postgres/replica.rs)
read -r -a files <<<"${FILES:-${core[*]}}"
read -r -a test_args <<<"${TESTS:---lib}"
out=${OUT:-$PWD/target/mutants}
command -v cargo-mutants >/dev/null 2>&1 || cargo install --quiet --locked cargo-mutants

clone=$(mktemp -d)
trap 'rm -rf "$clone"' EXIT
git clone --quiet . "$clone"
args=()
for file in "${files[@]}"; do
  if [ -d "$file" ]; then
    args+=(--file "$file/**/*.rs")
  else
    args+=(--file "$file")
  fi
done
mkdir -p "$out"
started=$(date +%s)
(cd "$clone" && cargo mutants --jobs "${JOBS:-2}" --timeout 120 --output "$out" "${args[@]}" -- "${test_args[@]}") || true
echo "mutants: $(wc -l <"$out/mutants.out/caught.txt") caught, $(wc -l <"$out/mutants.out/missed.txt") missed," \
  "$(wc -l <"$out/mutants.out/unviable.txt") unviable, $(wc -l <"$out/mutants.out/timeout.txt") timed out" \
  "in $(( $(date +%s) - started )) s; missed: $out/mutants.out/missed.txt"
