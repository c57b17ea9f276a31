"""The store wing: files only. The golden store, the metrics history, atomic writes, the cache
folders and the environment fingerprint recorded beside each golden.

May import: config.
"""
