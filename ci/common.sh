# shellcheck shell=bash
# Helpers shared by ci/nightly.sh and ci/rebaseline.sh (sourced, not run).
# Environment they read (the workflows set them from their inputs):
#   QG_CHECKPOINT   checkpoint id to run; empty: every checkpoint the markers select
#   QG_PYTEST_ARGS  extra pytest arguments, as shell words; a -k there is and-ed with the checkpoint
#   QG_MARKERS      marker expression (default "gpu")
#   QG_WORKERS      pytest-xdist workers: "gpus" (one per visible GPU; none with fewer than 2) or a number
#   QG_CONFIG       quant_guard configuration file (default: pyproject.toml)
#   VENV            the project's virtualenv (default .venv, made by ci/install.sh)
#   QG_GPU_LOCK     lock file that serialises quant_guard jobs on one host (default
#                   $TMPDIR/quant_guard-gpu.lock; "none" when each runner has its own GPU)

VENV="${VENV:-.venv}"
QG_PYTHON="${QG_PYTHON:-$VENV/bin/python}"
PYTEST="${PYTEST:-$VENV/bin/pytest}"

# Extra pytest arguments, NUL-separated, with the checkpoint selection as -k "[<id>-" (test ids
# start with the checkpoint id, e.g. test_visual[majicflus-cyberpunk-rain-s0]).
qg_pytest_args() {
    python3 - <<'EOF'
import os, re, shlex, sys

words = shlex.split(os.environ.get("QG_PYTEST_ARGS", ""))
checkpoint = os.environ.get("QG_CHECKPOINT", "").strip()
if checkpoint and not re.fullmatch(r"[\w.+-]+", checkpoint):
    sys.exit(f"::error::checkpoint id {checkpoint!r}: only letters, digits and . _ + - are allowed")
out, user_k, i = [], None, 0
while i < len(words):
    word = words[i]
    if word == "-k" and i + 1 < len(words):
        user_k, i = words[i + 1], i + 2
    elif word.startswith("-k") and len(word) > 2:
        user_k, i = word[2:], i + 1
    else:
        out.append(word)
        i += 1
exprs = ([f"[{checkpoint}-"] if checkpoint else []) + ([user_k] if user_k else [])
if exprs:
    out += ["-k", exprs[0] if len(exprs) == 1 else " and ".join(f"({e})" for e in exprs)]
sys.stdout.write("".join(word + "\0" for word in out))
EOF
}

# Download (or find in the cache) the weights of the selected real checkpoints before pytest
# starts, so xdist workers never download the same files at once and a broken download shows
# up as its own step. The only step that may download (DIFFSYNTH_SKIP_DOWNLOAD as the runner
# sets it; unset means download). Exit 2: QG_CHECKPOINT names no checkpoint of the configuration.
qg_prefetch() {
    "$QG_PYTHON" - <<'EOF'
import os, sys
from pathlib import Path

from quant_guard.model.checkpoints import CheckpointError, resolve_checkpoint
from quant_guard.config.project import load_config

config = load_config(Path(os.environ.get("QG_CONFIG") or "pyproject.toml").resolve())
wanted = os.environ.get("QG_CHECKPOINT", "").strip()
ids = [spec.id for spec in config.checkpoints]
if wanted and wanted not in ids:
    print(f"::error::no checkpoint {wanted!r} in {config.source}; known: {', '.join(ids)}")
    sys.exit(2)
failed = 0
for spec in config.checkpoints:
    if spec.embedded or (wanted and spec.id != wanted) or (not wanted and "gpu" not in spec.marks):
        continue
    print(f"prefetch: {spec.id}", flush=True)
    try:
        resolve_checkpoint(spec)
    except CheckpointError as exc:
        print(f"::error title=quant_guard prefetch::{spec.id}: {exc}")
        failed += 1
sys.exit(1 if failed else 0)
EOF
}

# pytest after the prefetch: every file is local by then, so no pytest process (nor any xdist
# worker) contacts the model hub again; a hub outage cannot fail the run, and a file the prefetch
# could not get fails its tests with the reason instead of being downloaded half-way through.
# Two shard jobs may land on one host (two runner services on one machine): without a GPU each
# (CUDA_VISIBLE_DEVICES in each runner's .env, then QG_GPU_LOCK=none), they would render on the
# same GPUs at once, measure each other's memory and time, and may run out of memory. The lock
# makes the second wait for the first.
qg_pytest() {
    local lock="${QG_GPU_LOCK:-${TMPDIR:-/tmp}/quant_guard-gpu.lock}"
    if [[ "$lock" == "none" ]] || ! command -v flock >/dev/null 2>&1; then
        DIFFSYNTH_SKIP_DOWNLOAD=True "$PYTEST" "$@"
        return
    fi
    if ! flock -n "$lock" true; then
        echo "::notice::another quant_guard job on this host holds $lock; waiting for it (QG_GPU_LOCK)"
    fi
    DIFFSYNTH_SKIP_DOWNLOAD=True flock "$lock" "$PYTEST" "$@"
}

# Number of pytest-xdist workers (0: run without xdist).
qg_workers() {
    local want="${QG_WORKERS:-gpus}" count=0
    if [[ "$want" == "gpus" ]]; then
        if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
            count=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)
        elif command -v nvidia-smi >/dev/null 2>&1; then
            count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
        fi
    elif [[ "$want" =~ ^[0-9]+$ ]]; then
        count="$want"
    else
        echo "::error::QG_WORKERS must be 'gpus' or a number, got '$want'" >&2
        return 1
    fi
    if (( count > 1 )); then echo "$count"; else echo 0; fi
}

# The configuration's golden directory, relative to the repository root.
qg_golden_dir() {
    "$QG_PYTHON" - <<'EOF'
import os
from pathlib import Path

from quant_guard.config.project import load_config

config = load_config(Path(os.environ.get("QG_CONFIG") or "pyproject.toml").resolve())
golden = Path(os.environ.get("QG_GOLDEN_DIR") or config.golden_dir).resolve()
print(os.path.relpath(golden, Path.cwd()))
EOF
}

# Append Markdown (stdin) to the job summary, or print it outside GitHub Actions.
qg_step_summary() {
    if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then cat >>"$GITHUB_STEP_SUMMARY"; else cat; fi
}
