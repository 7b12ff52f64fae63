#!/usr/bin/env bash
# Fuzzes sluice-api's selector parser and manifest loader, and sluice-proxy's HTTP request,
# HTTP/2 frame and TLS ClientHello cores, for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]    fuzz each target for SECONDS (default 60)
#   scripts/fuzz.sh 0            only replay the seeds and the saved corpus (a quick check)
#
# Run by hand, not in CI. Works on stable Rust: with cargo-fuzz (`cargo install cargo-fuzz`)
# and `--sanitizer none` (sanitizers need nightly); without cargo-fuzz it builds the targets
# with the same coverage flags cargo-fuzz passes to rustc (force that with
# SLUICE_FUZZ_WITHOUT_CARGO_FUZZ=1). A crash leaves its input in
# fuzz/artifacts/<target>/; add it as a regression test in crates/api/tests (or crates/proxy/tests,
# and as a seed: crates/proxy/tests/fuzz_seeds.rs replays the proxy seeds on stable).
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi

fuzz_directory="$(cd "$(dirname "$0")/../fuzz" && pwd)"
cd "$fuzz_directory"
targets=(selector_parser manifest_loader http_request http2_frames tls_client_hello)
host="$(rustc -vV | sed -n 's/^host: //p')"
# Manifests longer than this add time per run but no new paths.
libfuzzer_options=(-max_len=8192 -timeout=10)

if [[ -z "${SLUICE_FUZZ_WITHOUT_CARGO_FUZZ:-}" ]] && cargo fuzz --version >/dev/null 2>&1; then
    use_cargo_fuzz=true
else
    use_cargo_fuzz=false
    echo "cargo-fuzz not found; building with its coverage flags directly" >&2
    # The flags cargo-fuzz 0.13 gives rustc with --sanitizer none.
    export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions \
-Coverflow-checks"
    cargo build --release --target "$host" --bins
fi

mkdir -p "$fuzz_directory/logs"
failed=()
for target in "${targets[@]}"; do
    corpus="$fuzz_directory/corpus/$target"
    seeds="$fuzz_directory/seeds/$target"
    artifacts="$fuzz_directory/artifacts/$target"
    log="$fuzz_directory/logs/$target.log"
    mkdir -p "$corpus" "$artifacts"
    if [[ "$seconds" == 0 ]]; then
        # Files as arguments make libFuzzer run each once instead of fuzzing.
        inputs=()
        while IFS= read -r -d '' file; do inputs+=("$file"); done \
            < <(find "$seeds" "$corpus" -type f -print0 | sort -z)
        options=("${libfuzzer_options[@]}")
    else
        # New inputs go to the first directory, so the seeds stay as checked in.
        inputs=("$corpus" "$seeds")
        options=("${libfuzzer_options[@]}" -max_total_time="$seconds")
    fi
    echo "== $target: ${seconds}s, log in fuzz/logs/$target.log" >&2
    if $use_cargo_fuzz; then
        command=(cargo fuzz run --sanitizer none "$target" "${inputs[@]}" -- "${options[@]}")
    else
        command=("$fuzz_directory/target/$host/release/$target"
            -artifact_prefix="$artifacts/" "${options[@]}" "${inputs[@]}")
    fi
    if "${command[@]}" >"$log" 2>&1; then
        if [[ "$seconds" == 0 ]]; then
            echo "replayed ${#inputs[@]} inputs" >&2
        else
            grep -E '^(#[0-9]+[[:space:]]+DONE|Done [0-9]+ runs)' "$log" | tail -n 2 >&2 || true
        fi
    else
        failed+=("$target")
        grep -E -A3 'panicked at|deadly signal|Test unit written|ERROR:' "$log" | head -n 20 >&2 || true
    fi
done

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/, full output in fuzz/logs/)" >&2
    exit 1
fi
echo "no crashes in: ${targets[*]}" >&2
