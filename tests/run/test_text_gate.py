"""A case with ``expect_text`` through the whole gate (pytest itself, the tiny checkpoint): it
passes while the candidate's sign is readable and fails when it is not, the message quoting what
was expected and what each image shows; results.json, the history and the report page carry the
readings; a missing OCR engine stops the run at collection.

The tiny checkpoint cannot draw letters (it draws the shapes of its training captions), so the
project's conftest paints a sign onto every real render the gate makes: readable on the bf16 ones
(golden and the drift check's reference), readable or blurred past reading on the candidate
(``QG_TEST_SIGN``). Everything else is the gate's own path."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SIGN_CONFTEST = '''
import dataclasses
import os

import pytest

import quant_guard.run.gate as gate
from quant_guard.config.schemes import REFERENCE
from quant_guard.tools.degrade import soften_image
from quant_guard.tools.text_signs import paint_sign


@pytest.fixture(autouse=True)
def painted_sign(monkeypatch):
    real = gate._Renderer.__call__

    def render(self, scheme):
        done = real(self, scheme)
        image = paint_sign(done.image, (("NEON CITY", 28), ("OPEN ALL NIGHT", 18)))
        if scheme != REFERENCE and os.environ.get("QG_TEST_SIGN") == "blurred":
            image = soften_image(image, 6.0)  # no longer readable, by a person or by OCR
        return dataclasses.replace(done, image=image)

    monkeypatch.setattr(gate._Renderer, "__call__", render)
'''
# everything but the text loosened: the blurred candidate must fail on its text alone
TEXT_CASE = '''size = "256x256"
expect_text = ["NEON CITY"]
thresholds = { lpips = 2.0, ssim = -1.0, psnr = 0.0, colour_delta_e_p95 = 200.0, sharpness_min = 0.0 }'''


@pytest.fixture
def text_project(pytester: pytest.Pytester, qg_project: Callable[..., Path]) -> Path:
    qg_project(extra_case=TEXT_CASE)
    pytester.makeconftest(SIGN_CONFTEST)
    return pytester.path


def _record(root: Path) -> dict[str, Any]:
    (record,) = json.loads((root / "qg-report" / "results.json").read_text(encoding="utf-8"))["results"]
    return record  # type: ignore[no-any-return]


def test_a_case_expecting_text_passes_readable_and_fails_unreadable_text(
        pytester: pytest.Pytester, text_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.runpytest("--update-golden").assert_outcomes(passed=1)
    history = text_project / "history"

    monkeypatch.setenv("QG_RUN_ID", "readable")
    pytester.runpytest(f"--qg-history={history}", "--qg-report=all").assert_outcomes(passed=1)
    record = _record(text_project)
    text = record["scorecard"]["text"]
    assert text["cer"] == 0.0 and "NEON CITY" in text["candidate"]["text"] and text["golden"]["words"]
    assert [(c["source"], c["passed"]) for c in record["checks"] if c["key"] == "text_cer_max"] == [
        ("threshold", True), ("expected", True)]
    page = (text_project / "qg-report" / "index.html").read_text(encoding="utf-8")
    assert "Text read (expected “NEON CITY”" in page and page.count('class="box word"') >= 4  # NEON, CITY twice

    monkeypatch.setenv("QG_TEST_SIGN", "blurred")
    monkeypatch.setenv("QG_RUN_ID", "blurred")
    result = pytester.runpytest("--qg-no-expected", f"--qg-history={history}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*text CER 1.0000 > max 0.3000 (threshold) FAIL*",
                                 '*text: expected "NEON CITY": golden reads "*NEON CITY*" (CER 0.00), '
                                 "candidate reads nothing (CER 1.00, limit 0.3)*"])
    record = _record(text_project)
    assert [c["key"] for c in record["checks"] if not c["passed"]] == ["text_cer_max"]
    # the drift check rendered bf16 now: the candidate fails against it on the text as well
    against_reference = record["drift"]["candidate_vs_reference"]["checks"]
    assert [c["key"] for c in against_reference if not c["passed"]] == ["text_cer_max"]
    assert "candidate reads nothing" in (text_project / "qg-report" / "index.html").read_text(encoding="utf-8")
    # the history keeps the text CER of both runs, as it keeps LPIPS
    from quant_guard.store.history import read

    runs = {r.run_id: r.value("text_cer") for r in read(history).records}
    assert runs == {"readable": 0.0, "blurred": 1.0}


def test_missing_ocr_stops_the_run_at_collection(pytester: pytest.Pytester, text_project: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "no-such-tesseract")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("quant_guard: 1 selected test(s) check text (expect_text, e.g. tiny-red-circle-s0), but the Tesseract OCR "
            "engine ('no-such-tesseract') is not on PATH: install the Python binding with pip install "
            "'quant_guard[text]' and the Tesseract OCR engine from the system's packages (Debian/Ubuntu: apt-get "
            "install tesseract-ocr") in result.stderr.str()
    # deselected, the case needs nothing
    pytester.runpytest("-k", "nothing-matches").assert_outcomes()
