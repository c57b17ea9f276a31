"""The visual regression gate: one test per (checkpoint, scheme, case, seed) of [tool.quant_guard].

`pytest tests/visual` checks each scheme's candidate of each case against its bf16 golden;
`pytest tests/visual --update-golden` re-baselines.
"""

from quant_guard.run.cases import VisualCase
from quant_guard.plugin import Gate


def test_visual(qg_case: VisualCase, qg_gate: Gate) -> None:
    qg_gate.check(qg_case)
