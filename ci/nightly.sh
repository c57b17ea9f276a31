#!/usr/bin/env bash
# The nightly GPU gate (.github/workflows/nightly-gpu.yml).
#
#   ci/nightly.sh run            one shard: prefetch the weights, `pytest -m gpu` with JUnit XML and
#                                the report (results.json + index.html) under $QG_OUT, then the
#                                Markdown summary to $GITHUB_STEP_SUMMARY (stdout outside Actions)
#   ci/nightly.sh summary DIR    merge the shards' reports found under DIR (DIR/*/report) into one
#                                summary; fails when no shard ran any visual test
#
# Environment: see ci/common.sh, plus QG_SHARD / QG_SHARDS (this shard of how many, default 1/1)
# and QG_OUT (default qg-out). Exit status: pytest's; a shard that the selection leaves without
# tests (exit 5) passes when there are several shards: the summary job checks that some ran.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/common.sh
source ci/common.sh

run() {
    local out="${QG_OUT:-qg-out}" shard="${QG_SHARD:-1}" shards="${QG_SHARDS:-1}" status=0 rc=0 workers
    mkdir -p "$out"
    qg_prefetch || status=$?
    if (( status == 2 )); then exit 2; fi  # unknown checkpoint id: nothing sensible to run
    if (( status != 0 )); then echo "::warning::prefetch failed; the affected tests will fail with the reason"; fi

    local args=(-m "${QG_MARKERS:-gpu}" -ra --junitxml="$out/junit.xml" --qg-report-dir="$out/report" --qg-report=all)
    if (( shards > 1 )); then args+=(--qg-shard "$shard/$shards"); fi
    workers="$(qg_workers)"
    if (( workers > 1 )); then args+=(-n "$workers"); fi
    local extra=()
    qg_pytest_args >"$out/.pytest-args"
    mapfile -d '' -t extra <"$out/.pytest-args"
    rm -f "$out/.pytest-args"

    echo "+ $PYTEST ${args[*]} ${extra[*]}"
    qg_pytest "${args[@]}" "${extra[@]}" || rc=$?

    local title="quant_guard nightly"
    if (( shards > 1 )); then title+=" (shard $shard/$shards)"; fi
    python3 ci/step_summary.py --title "$title" "$out/report" | qg_step_summary
    if (( rc == 5 && shards > 1 )); then
        echo "::notice::shard $shard/$shards: the selection left no tests for this shard"
        rc=0
    fi
    return "$rc"
}

summary() {
    local root="${1:?usage: ci/nightly.sh summary DIR}" reports=() shard
    shopt -s nullglob
    for shard in "$root"/*/; do reports+=("${shard%/}/report"); done  # one artifact folder per shard
    if (( ${#reports[@]} == 0 )); then reports=("$root"); fi  # no shard uploaded anything: say so
    python3 ci/step_summary.py --require-results --title "quant_guard nightly (all shards)" "${reports[@]}" \
        | qg_step_summary
}

case "${1:-run}" in
    run) run ;;
    summary) shift; summary "$@" ;;
    *) echo "usage: ci/nightly.sh run | summary DIR" >&2; exit 2 ;;
esac
