"""The run wing: the pytest gate. Cases, the session (lifetimes only), the gate of one case,
pytest-xdist support and the history alarm applied to finished checks.

May import: config, store, judge, model, report.
"""
