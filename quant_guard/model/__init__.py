"""The model wing: the DiffSynth side. Checkpoint resolution, pipelines, the memory plan and host
memory, applying a scheme and checking it, rendering with time and memory, and the embedded tiny
checkpoint.

May import: config, store, judge.
"""
