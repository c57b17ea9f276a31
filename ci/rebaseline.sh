#!/usr/bin/env bash
# Re-baseline goldens on this machine (.github/workflows/rebaseline.yml, on the GPU runner that
# runs the nightly gate: GPU goldens are not bit-stable across GPU models and drivers).
#
# Runs `pytest -m gpu --update-golden` for the selection (see ci/common.sh), then:
#   - copies the new and changed golden files to $QG_OUT/golden (the workflow uploads $QG_OUT as
#     an artifact for review) and writes $QG_OUT/rebaseline.md (what changed + the results table);
#   - with QG_OPEN_PR=true, commits them on a new branch rebaseline/<checkpoint>-<run id>, pushes
#     that branch and opens a pull request against QG_BASE (default: the branch it runs on, else
#     main) with `gh pr create`. The base branch itself is never pushed to.
# Nothing is committed when the update fails or leaves every golden unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/common.sh
source ci/common.sh

out="${QG_OUT:-qg-out}"
if [[ "${QG_OPEN_PR:-false}" == "true" ]] && ! command -v gh >/dev/null 2>&1; then
    # checked first: a whole GPU re-baseline must not end in a pushed branch without its pull request
    echo "::error::QG_OPEN_PR=true opens the pull request with the GitHub CLI, but \`gh\` is not on PATH." \
         "Install it (https://cli.github.com), or run without QG_OPEN_PR=true to get the new goldens as an" \
         "artifact only. Nothing was rendered, committed or pushed." >&2
    exit 2
fi
base="${QG_BASE:-${GITHUB_REF_NAME:-main}}"
label="${QG_CHECKPOINT:-all}"
mkdir -p "$out"

status=0
qg_prefetch || status=$?
if (( status != 0 )); then exit "$status"; fi  # goldens of a half-downloaded checkpoint: never
golden_dir="$(qg_golden_dir)"

args=(-m "${QG_MARKERS:-gpu}" -ra --update-golden --junitxml="$out/junit.xml" --qg-report-dir="$out/report"
      --qg-report=all)
workers="$(qg_workers)"
if (( workers > 1 )); then args+=(-n "$workers"); fi
extra=()
qg_pytest_args >"$out/.pytest-args"
mapfile -d '' -t extra <"$out/.pytest-args"
rm -f "$out/.pytest-args"

echo "+ $PYTEST ${args[*]} ${extra[*]}"
rc=0
qg_pytest "${args[@]}" "${extra[@]}" 2>&1 | tee "$out/pytest.log" || rc=$?

# New and modified goldens (update-golden never deletes), as paths relative to the repository.
mapfile -t changed < <(git ls-files --modified --others --exclude-standard -- "$golden_dir" | sort -u)
{
    echo "## quant_guard re-baseline: $label"
    echo
    echo "Machine: \`$(hostname)\`; run: ${GITHUB_SERVER_URL:-}${GITHUB_REPOSITORY:+/$GITHUB_REPOSITORY/actions/runs/}${GITHUB_RUN_ID:-local}"
    echo
    grep -E '^quant_guard: goldens ' "$out/pytest.log" | tail -n 1 || true
    echo
    if (( ${#changed[@]} )); then
        echo "Changed goldens (${#changed[@]} files):"
        echo
        # shellcheck disable=SC2016  # backquotes are Markdown here
        printf -- '- `%s`\n' "${changed[@]}"
    else
        echo "No golden changed."
    fi
    echo
    python3 ci/step_summary.py --title "results of the update" "$out/report" | sed 's/^## /### /'
} >"$out/rebaseline.md"
qg_step_summary <"$out/rebaseline.md"

if (( rc != 0 )); then
    echo "::error::pytest --update-golden failed (exit $rc): no goldens are proposed"
    exit "$rc"
fi
if (( ${#changed[@]} == 0 )); then
    echo "goldens unchanged: nothing to propose"
    exit 0
fi
for file in "${changed[@]}"; do
    mkdir -p "$out/golden/$(dirname "$file")"
    cp -- "$file" "$out/golden/$file"
done

if [[ "${QG_OPEN_PR:-false}" != "true" ]]; then
    echo "new goldens are in $out/golden (uploaded as an artifact for review)"
    exit 0
fi
branch="rebaseline/$label-${GITHUB_RUN_ID:-$(date -u +%Y%m%d%H%M%S)}"
if [[ "$branch" == "$base" ]]; then echo "::error::refusing to push to $base" >&2; exit 1; fi
git switch --quiet -c "$branch"
git add -- "${changed[@]}"
git -c user.name="${QG_GIT_NAME:-github-actions[bot]}" \
    -c user.email="${QG_GIT_EMAIL:-41898282+github-actions[bot]@users.noreply.github.com}" \
    commit --quiet -m "Re-baseline goldens: $label" -m "pytest --update-golden on $(hostname)"
git push origin "HEAD:refs/heads/$branch"  # the new branch only, never $base
gh pr create --base "$base" --head "$branch" --title "Re-baseline goldens: $label" --body-file "$out/rebaseline.md"
