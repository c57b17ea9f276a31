"""The render tests every tiny family checkpoint passes, written once. A family's test module
imports them (pytest collects them there, with that module's ids) and defines two module-scoped
fixtures: ``files`` (its built checkpoint) and ``family`` (a ``family_support.FamilyLimits``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from family_support import INT8, SIZE, FamilyLimits, build, damaged_dit, render

from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE


@pytest.fixture(scope="module")
def bf16(family: FamilyLimits, files: Any) -> tuple[Any, np.ndarray]:
    pipe = build(family.embedded, files, REFERENCE)
    return pipe, render(pipe)


@pytest.fixture(scope="module")
def float8(family: FamilyLimits, files: Any) -> tuple[Any, np.ndarray]:
    pipe = build(family.embedded, files, FLOAT8_E4M3FN)
    return pipe, render(pipe)


def test_bf16_renders_an_image(bf16: tuple[Any, np.ndarray]) -> None:
    _, image = bf16
    assert image.shape == (SIZE, SIZE, 3)
    assert image.std() > 2  # not one flat colour (a NaN latent decodes to a constant image)


def test_float8_storage_keeps_every_dit_linear_in_float8(float8: tuple[Any, np.ndarray]) -> None:
    import torch

    pipe, _ = float8
    linears = [(name, m) for name, m in pipe.dit.named_modules() if type(m).__name__ == "AutoWrappedLinear"]
    plain = [name for name, m in pipe.dit.named_modules() if type(m) is torch.nn.Linear]
    assert linears and not plain
    assert {m.weight.dtype for _, m in linears} == {torch.float8_e4m3fn}


def test_float8_differs_from_bf16_but_only_a_little(family: FamilyLimits, bf16: tuple[Any, np.ndarray],
                                                    float8: tuple[Any, np.ndarray]) -> None:
    from quant_guard.judge.metrics import compare_images

    metrics = compare_images(bf16[1], float8[1])
    assert not np.array_equal(bf16[1], float8[1])
    assert metrics.lpips < family.float8_lpips_max and metrics.psnr > family.float8_psnr_min, metrics


def test_an_int8_quantized_dit_is_quantized_and_close(family: FamilyLimits, files: Any,
                                                      bf16: tuple[Any, np.ndarray]) -> None:
    from quant_guard.judge.metrics import compare_images
    from quant_guard.model.scheme_check import inventory

    pipe = build(family.embedded, files, INT8)  # build_pipeline has run quant_guard's scheme check
    formats = inventory(pipe.dit).formats()
    assert formats and all("int8" in fmt.lower() for fmt in formats), formats
    image = render(pipe)
    assert not np.array_equal(bf16[1], image)
    metrics = compare_images(bf16[1], image)
    assert metrics.lpips < family.float8_lpips_max and metrics.psnr > family.float8_psnr_min, metrics


def test_a_damaged_dit_moves_the_image_far_more_than_float8(family: FamilyLimits, files: Any,
                                                            bf16: tuple[Any, np.ndarray],
                                                            float8: tuple[Any, np.ndarray], tmp_path: Path) -> None:
    from quant_guard.judge.metrics import compare_images

    dit = damaged_dit(family.embedded, files.dit, tmp_path / "damaged.safetensors", strength=family.damage_noise)
    damaged = render(build(family.embedded, files, REFERENCE, dit=dit))
    honest, broken = compare_images(bf16[1], float8[1]), compare_images(bf16[1], damaged)
    assert broken.lpips > family.damage_over_float8 * honest.lpips, (honest, broken)
    assert broken.psnr < honest.psnr - 6, (honest, broken)
