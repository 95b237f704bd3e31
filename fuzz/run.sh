#!/usr/bin/env bash
# Runs one fuzz target (or all) with cargo-fuzz (libFuzzer, AddressSanitizer) for SECONDS each.
#   fuzz/run.sh path 600        # one target, ten minutes
#   fuzz/run.sh all 30          # every target, 30 s each (what CI runs)
# The toolchain here is stable: cargo-fuzz needs nightly flags (-Zsanitizer), which
# RUSTC_BOOTSTRAP=1 unlocks on the same compiler. Installs cargo-fuzz when absent. The corpus
# grows in fuzz/corpus/TARGET (seeds committed in fuzz/seeds/TARGET); a crash is written to
# fuzz/artifacts/TARGET and fails the run.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET|all SECONDS}
seconds=${2:-60}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
targets=(path token cookie_csrf_form next config http answer)
[ "$target" = all ] || targets=("$target")
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  echo "== fuzz $t for ${seconds}s"
  # -rss_limit_mb: the http target runs a whole gateway (and its runtime) in the process.
  cargo fuzz run --release "$t" "corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=4096 -timeout=10 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 2>&1 | tee "artifacts/$t.log" | grep -E "^#|ERROR|panicked|stat::|Done" | tail -n 12
  status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] || { echo "fuzz $t failed: see fuzz/artifacts/$t.log" >&2; exit "$status"; }
done
