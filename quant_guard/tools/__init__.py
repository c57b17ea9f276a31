"""The tools wing: what the command line runs beside the gate. The doctor and its full-size run,
synthetic weights, pre-quantized files, deliberate damage, the sensitivity sweep and the report
demo.

May import: every other wing.
"""
