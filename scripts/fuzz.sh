#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ for a while each.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS defaults to 60 (or $FUZZ_SECONDS); the targets default to all of
# them (frame_decoder, handshake_response, deflate). Installs cargo-fuzz if
# it is missing. Works on the stable toolchain: cargo-fuzz passes nightly
# flags (-Zsanitizer=..., -Cpasses=sancov-module), which RUSTC_BOOTSTRAP=1
# lets stable accept.
#
# FUZZ_SANITIZER picks the sanitizer (default `none`: the code under test is
# safe Rust, so the oracle is panics and the targets' assertions, and
# AddressSanitizer would cost 3-4x the executions; `address` to turn it on).
# Debug assertions and overflow checks are on either way. FUZZ_MAX_LEN caps
# the input length (default 8192).
#
# Each target starts from its seeds (fuzz/seeds/<target>/) and the inputs
# kept as regressions (crates/unisocket/tests/regressions/<target>/), plus
# whatever corpus earlier runs left in fuzz/corpus/<target>/. A crash is
# copied into crates/unisocket/tests/regressions/<target>/, where the stable
# harness (cargo test --test fuzz_harness) replays it from then on, and
# the script exits non-zero once every target has run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

SECONDS_EACH="${1:-${FUZZ_SECONDS:-60}}"
shift || true
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=(frame_decoder handshake_response deflate)
fi
case "$SECONDS_EACH" in
    '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, not '$SECONDS_EACH'" >&2; exit 2 ;;
esac

SANITIZER="${FUZZ_SANITIZER:-none}"
MAX_LEN="${FUZZ_MAX_LEN:-8192}"

export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

echo "==> building the fuzz targets (release, debug assertions, sanitizer: $SANITIZER)"
start=$(date +%s)
for t in "${TARGETS[@]}"; do
    (cd fuzz && cargo fuzz build --sanitizer "$SANITIZER" "$t")
done
echo "built in $(($(date +%s) - start))s"

failed=()
for t in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    for seeds in "fuzz/seeds/$t" "crates/unisocket/tests/regressions/$t"; do
        if [ -d "$seeds" ]; then
            find "$seeds" -maxdepth 1 -type f ! -name '*.md' -exec cp -f {} "$corpus/" \;
        fi
    done
    echo "==> fuzzing $t for ${SECONDS_EACH}s"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    status=0
    (cd fuzz && cargo fuzz run --sanitizer "$SANITIZER" "$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -max_len="$MAX_LEN" -print_final_stats=1) || status=$?
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    if [ "$status" -ne 0 ] || [ "$after" -gt "$before" ]; then
        failed+=("$t")
        keep="crates/unisocket/tests/regressions/$t"
        mkdir -p "$keep"
        for f in fuzz/artifacts/"$t"/*; do
            [ -f "$f" ] && cp -n "$f" "$keep/" && echo "kept $f as $keep/$(basename "$f")"
        done
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}; the inputs are kept under crates/unisocket/tests/regressions/" >&2
    echo "fuzz: reproduce with: cargo test -p unisocket --test fuzz_harness replays_kept_regressions" >&2
    exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets, ${SECONDS_EACH}s each, no crash"
