"""The pytest stash keys that the gate's plugin (``quant_guard.plugin``) and the report hooks
(``run.report_hooks``) share: the run's session on the config, each visual test's result on its item."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from quant_guard.run.cases import CaseResult
    from quant_guard.run.session import QuantGuardSession

SESSION_KEY = pytest.StashKey["QuantGuardSession | None"]()
RESULT_KEY = pytest.StashKey["CaseResult"]()
