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
#
# Metrics history (README, "Nightly history"): with QG_HISTORY_DIR set, `run` judges and appends
# to that folder (--qg-history; the workflow restores it from the actions cache) and copies the
# files this shard added to $QG_OUT/history; `summary` merges DIR/*/history into QG_HISTORY_DIR,
# keeps its newest QG_HISTORY_KEEP_RUNS runs (default 200), writes the trend page to
# $QG_TRENDS_OUT/trends.html (default qg-trends), adds "Moved since last night" to the summary,
# and writes the cache key to save the merged folder under to $GITHUB_OUTPUT (history-key).
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
    local history="${QG_HISTORY_DIR:-}" summary_args=()
    if [[ -n "$history" ]]; then
        mkdir -p "$history"
        args+=(--qg-history "$history")
        summary_args+=(--history "$history")
        python3 ci/history.py snapshot "$history" >"$out/.history-before"
    fi
    workers="$(qg_workers)"
    if (( workers > 1 )); then args+=(-n "$workers"); fi
    local extra=()
    qg_pytest_args >"$out/.pytest-args"
    mapfile -d '' -t extra <"$out/.pytest-args"
    rm -f "$out/.pytest-args"

    echo "+ $PYTEST ${args[*]} ${extra[*]}"
    qg_pytest "${args[@]}" "${extra[@]}" || rc=$?
    if [[ -n "$history" ]]; then
        python3 ci/history.py collect "$history" "$out/.history-before" "$out/history"
        rm -f "$out/.history-before"
    fi

    local title="quant_guard nightly"
    if (( shards > 1 )); then title+=" (shard $shard/$shards)"; fi
    python3 ci/step_summary.py --title "$title" "${summary_args[@]}" "$out/report" | qg_step_summary
    if (( rc == 5 && shards > 1 )); then
        echo "::notice::shard $shard/$shards: the selection left no tests for this shard"
        rc=0
    fi
    return "$rc"
}

summary() {
    local root="${1:?usage: ci/nightly.sh summary DIR}" reports=() shard histories=() summary_args=() rc=0
    local history="${QG_HISTORY_DIR:-}"
    shopt -s nullglob
    for shard in "$root"/*/; do
        reports+=("${shard%/}/report")  # one artifact folder per shard
        if [[ -d "${shard}history" ]]; then histories+=("${shard%/}/history"); fi
    done
    if (( ${#reports[@]} == 0 )); then reports=("$root"); fi  # no shard uploaded anything: say so
    if [[ -n "$history" ]]; then
        mkdir -p "$history"
        if (( ${#histories[@]} > 0 )); then python3 ci/history.py merge "$history" "${histories[@]}"; fi
        python3 ci/history.py prune "$history" --keep-runs "${QG_HISTORY_KEEP_RUNS:-200}"
        summary_args+=(--history "$history")
        "$QG_PYTHON" -m quant_guard.cli history "$history" report "${QG_TRENDS_OUT:-qg-trends}" \
            || echo "::warning::the trend page could not be written"
        if [[ -n "${GITHUB_OUTPUT:-}" ]]; then  # a new dated key: cache entries are immutable
            echo "history-key=qg-history-$(date -u +%Y%m%d)-${GITHUB_RUN_ID:-0}-${GITHUB_RUN_ATTEMPT:-1}" >>"$GITHUB_OUTPUT"
        fi
    fi
    python3 ci/step_summary.py --require-results --title "quant_guard nightly (all shards)" "${summary_args[@]}" \
        "${reports[@]}" | qg_step_summary || rc=$?
    return "$rc"
}

case "${1:-run}" in
    run) run ;;
    summary) shift; summary "$@" ;;
    *) echo "usage: ci/nightly.sh run | summary DIR" >&2; exit 2 ;;
esac
