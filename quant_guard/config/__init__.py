"""The configuration wing: the ``[tool.quant_guard]`` TOML and the typed settings read from it
(checkpoints, cases, schemes, thresholds and limits policy), units and their parsing, and the
errors that name the file and key.

May import: nothing else of quant_guard (it is the bottom wing).
"""
