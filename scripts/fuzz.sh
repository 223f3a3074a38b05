#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for FUZZ_SECONDS each (default 60)
# on the stable toolchain, and fails on the first crash, panic, hang or
# out-of-memory. CI runs it as is (.ci/run).
#
#   scripts/fuzz.sh                   every target, FUZZ_SECONDS each
#   scripts/fuzz.sh role_file ...     only these targets
#   scripts/fuzz.sh --update-corpus   also merge what the run found into
#                                     fuzz/corpus/<target>/ (cargo fuzz cmin)
#
# Environment:
#   FUZZ_SECONDS    seconds per target (default 60)
#   FUZZ_SANITIZER  address (default) or none
#   FUZZ_TOOLCHAIN  the rustup toolchain (default stable)
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang
#                   (default 30)
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module)
# to rustc; RUSTC_BOOTSTRAP=1 lets the stable compiler take them, so no
# nightly toolchain is needed. A crash leaves its input under
# fuzz/artifacts/<target>/ (the path is printed); reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo +stable fuzz run <target> <that file>
# New inputs a run finds go to a scratch dir, not into the committed corpus,
# unless --update-corpus is given.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
fuzz="$root/fuzz"
seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-address}
toolchain=${FUZZ_TOOLCHAIN:-stable}
timeout=${FUZZ_TIMEOUT:-30}
update=0
targets=()
for a in "$@"; do
    case "$a" in
        --update-corpus) update=1 ;;
        -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $a" >&2; exit 2 ;;
        *) targets+=("$a") ;;
    esac
done
case "$seconds" in
    '' | *[!0-9]*) echo "fuzz.sh: FUZZ_SECONDS must be a whole number of seconds, not '$seconds'" >&2; exit 2 ;;
esac
if [ "$seconds" -lt 1 ] || [ "$seconds" -gt 86400 ]; then
    echo "fuzz.sh: FUZZ_SECONDS must be 1..86400, not $seconds" >&2
    exit 2
fi
case "$sanitizer" in
    address | none) ;;
    *) echo "fuzz.sh: FUZZ_SANITIZER must be address or none, not '$sanitizer'" >&2; exit 2 ;;
esac

cargo=(cargo)
if command -v rustup >/dev/null 2>&1; then
    cargo=(cargo "+$toolchain")
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

cd "$fuzz"
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <("${cargo[@]}" fuzz list)
fi

start=$(date +%s)
echo "fuzz.sh: building ${#targets[@]} targets (sanitizer $sanitizer)"
# Every target at once (one build of the supervisor); a compile error stops
# here.
"${cargo[@]}" fuzz build -s "$sanitizer"
built=$(date +%s)
echo "fuzz.sh: built in $((built - start)) s"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/hashi-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
summary=()
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "$scratch/$t"
    dirs=("$scratch/$t" "corpus/$t")
    [ -d "seeds/$t" ] && dirs+=("seeds/$t")
    log="$scratch/$t.log"
    echo "fuzz.sh: $t for ${seconds} s"
    set +e
    "${cargo[@]}" fuzz run -s "$sanitizer" "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -n 1)
    line="$t: ${execs:-?} execs, ${cov:-no coverage line}"
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        line="$line, FAILED (exit $rc)"
        echo "---- $t: the end of its log ----"
        tail -n 60 "$log"
        grep -E 'Test unit written to|artifact_prefix' "$log" || true
        echo "----"
    fi
    echo "fuzz.sh: $line"
    summary+=("$line")
    if [ "$update" -eq 1 ] && [ "$rc" -eq 0 ]; then
        # The smallest set of inputs that covers every edge the old corpus,
        # the seeds and this run reach (libFuzzer's set cover on edges, not
        # on hit counts: `cargo fuzz cmin` keeps ~3x more).
        merged="$scratch/$t.merged"
        mkdir -p "$merged"
        bin="target/$(rustc -vV | sed -n 's/^host: //p')/release/$t"
        if "$bin" -set_cover_merge=1 -use_counters=0 -timeout="$timeout" \
            "$merged" "${dirs[@]}" >"$scratch/$t.cmin.log" 2>&1; then
            rm -rf "corpus/$t"
            mv "$merged" "corpus/$t"
        else
            tail -n 20 "$scratch/$t.cmin.log"
            failed+=("$t (corpus merge)")
        fi
    fi
done

echo "fuzz.sh: summary ($((  $(date +%s) - start )) s in all, ${seconds} s per target)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz.sh: FAILED: ${failed[*]} (inputs under $fuzz/artifacts/)" >&2
    exit 1
fi
