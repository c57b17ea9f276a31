"""``quant_guard.model.long_lived``: the objects of the heavy imports are frozen, garbage is not.

Each check runs in a fresh interpreter: freezing is process-wide and once per process, and this
test process must not be frozen by it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import gc, json, weakref
from quant_guard.model.long_lived import frozen_after

class Node:
    pass

def garbage_cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)

def frozen(obj):  # gc.get_objects() lists generations 0-2, not the permanent one
    return not any(o is obj for o in gc.get_objects())

gc.disable()  # no automatic collection: only the ones this script and frozen_after make
earlier = garbage_cycle()  # what an earlier test left behind
with frozen_after():
    imported = Node()  # what an import creates and keeps
frozen_count = gc.get_freeze_count()
later = garbage_cycle()  # garbage made after the imports (a released pipeline)
kept = Node()  # made after the imports and kept
gc.collect()
with frozen_after():  # once per process: a second use freezes nothing
    again = Node()
print(json.dumps({"earlier_freed": earlier() is None, "imported_frozen": frozen(imported),
                  "later_freed": later() is None, "kept_frozen": frozen(kept), "again_frozen": frozen(again),
                  "count_unchanged": gc.get_freeze_count() == frozen_count}))
"""


def test_heavy_imports_are_frozen_and_garbage_is_still_collected() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    assert json.loads(out.stdout) == {
        "earlier_freed": True,  # collected before the freeze, not kept forever
        "imported_frozen": True,  # full collections skip what the imports created
        "later_freed": True,  # garbage made afterwards is collected as before
        "kept_frozen": False,
        "again_frozen": False,
        "count_unchanged": True,
    }
