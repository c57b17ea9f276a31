"""A case's ``expect_text`` and ``expect_text_region``, the ``text_cer_max`` limit and the expected
mode's ``text_cer_margin``: parsed strictly, errors naming the file and the key."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from quant_guard.config.project import ConfigError, parse_config
from quant_guard.config.thresholds import TEXT_CER_MAX, Thresholds

FILE = Path("/projects/demo/pyproject.toml")


def _config(case: dict[str, Any], **root: Any) -> Any:
    return parse_config({"checkpoints": [{"id": "tiny", "embedded": "tiny", "device": "cpu",
                                          "render": {"size": "64x64"}},
                                         {"id": "big", "embedded": "tiny", "device": "cpu",
                                          "render": {"size": "128x128"}}],
                         "cases": [{"id": "sign", "prompt": "a sign", **case}], **root}, file=FILE)


def test_a_case_lists_the_text_and_where_to_read_it() -> None:
    (case,) = _config({"expect_text": ["NEON CITY", "OPEN"], "expect_text_region": [0, 8, 64, 32]}).cases
    assert case.expect_text == ("NEON CITY", "OPEN") and case.expect_text_region == (0, 8, 64, 32)
    (plain,) = _config({}).cases
    assert plain.expect_text == () and plain.expect_text_region is None


def test_the_text_limit_and_its_expected_margin() -> None:
    config = _config({"thresholds": {"text_cer_max": 0.2}}, expected={"text_cer_margin": 0.05})
    assert config.cases[0].thresholds.text_cer_max == 0.2 and config.expected.text_cer_margin == 0.05
    # a default limit: it judges only a case with expect_text (no other case has a text CER)
    assert Thresholds.DEFAULT.text_cer_max == TEXT_CER_MAX


@pytest.mark.parametrize(("case", "message"), [
    ({"expect_text": "NEON CITY"}, "cases[[]0[]].expect_text: must be list, got str 'NEON CITY'"),
    ({"expect_text": []}, "cases[[]0[]].expect_text: must be a non-empty list of non-empty strings, *got []"),
    ({"expect_text": ["NEON", " "]}, "cases[[]0[]].expect_text: must be a non-empty list of non-empty strings*"),
    ({"expect_text_region": [0, 0, 8, 8]}, "cases[[]0[]].expect_text_region: needs expect_text*"),
    ({"expect_text": ["A"], "expect_text_region": [0, 0, 8]}, "cases[[]0[]].expect_text_region: must be [[]x, y, w, h[]]*"),
    ({"expect_text": ["A"], "expect_text_region": [0, 0, 8, 0]}, "*expect_text_region: x and y must be >= 0 and w and h > 0*"),
    ({"expect_text": ["A"], "expect_text_region": [0, 0, 100, 8]},
     "*expect_text_region: [[]0, 0, 100, 8[]] (x, y, w, h) does not lie inside the 64x64 image the case renders on "
     "checkpoint 'tiny'"),
    ({"expect_txt": ["A"]}, "cases[[]0[]].expect_txt: unknown key; did you mean 'expect_text'?*"),
    ({"expect_text": ["A"], "thresholds": {"text_cer_max": 1.5}},
     "cases[[]0[]].thresholds.text_cer_max: must be between 0.0 and 1.0, got 1.5"),
])
def test_a_bad_text_setting_names_file_and_key(case: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(case)
    assert fnmatch(str(info.value), f"{FILE}: tool.quant_guard.{message}"), str(info.value)


def test_a_region_is_checked_against_the_case_size_over_the_checkpoints() -> None:
    # the case's own size wins over the checkpoint's render size
    (case,) = _config({"expect_text": ["A"], "expect_text_region": [0, 0, 100, 8], "size": "128x128"}).cases
    assert case.expect_text_region == (0, 0, 100, 8)
    # a case on one checkpoint only is checked against that one
    (only_big,) = _config({"expect_text": ["A"], "expect_text_region": [0, 0, 100, 8], "checkpoints": ["big"]}).cases
    assert only_big.checkpoints == ("big",)
