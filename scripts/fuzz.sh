#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 600), one after another, on the seeds in
# fuzz/seeds and the corpus earlier runs grew (fuzz/corpus, git-ignored).
#   scripts/fuzz.sh                 # every target, 10 minutes each
#   scripts/fuzz.sh 30              # every target, 30 s each (what .ci/run does)
#   scripts/fuzz.sh 600 order       # one target
#   FUZZ_DEV=1 scripts/fuzz.sh 20   # unoptimised: builds in a third of the time (CI's smoke run)
# A crash stops the script: the input is in fuzz/artifacts/TARGET/. Fix the bug, then copy the
# input to fuzz/regressions/TARGET/ so tests/fuzz_regressions.rs replays it for ever.
# Stable Rust is enough: the targets run without a sanitizer (the box has no unsafe code of its
# own) but with debug assertions, so overflows are crashes too.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(message order invoice lnurl config policy)

CARGO_FUZZ_VERSION=0.13.2
fuzz=.cache/cargo-fuzz/bin/cargo-fuzz
if [ ! -x "$fuzz" ] || ! "$fuzz" --version | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into .cache/cargo-fuzz..."
  CARGO_TARGET_DIR=.cache/cargo-fuzz-target cargo install --quiet --locked cargo-fuzz \
    --version "$CARGO_FUZZ_VERSION" --root .cache/cargo-fuzz
  rm -rf .cache/cargo-fuzz-target
fi

flags=(--sanitizer none)
[ -z "${FUZZ_DEV:-}" ] || flags+=(--dev)
"$fuzz" build "${flags[@]}" >&2
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== fuzz $t for ${seconds}s"
  # -rss_limit_mb: a request must not make the box allocate without bound.
  "$fuzz" run "${flags[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 |
    grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==|INFO: seed corpus|.*(panicked|ERROR|SUMMARY|Test unit written))" || true
  if [ -n "$(ls -A "fuzz/artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz $t: CRASH, input(s) in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "fuzz: no crashes"
