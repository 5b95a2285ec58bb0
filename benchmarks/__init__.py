"""Performance suite: library scenarios timed against raw ``sqlite3`` baselines in the same run.

Run ``python -m benchmarks`` from the repository root (``--quick`` for a seconds-long smoke run,
``--markdown FILE`` to also write the table and a machine description).
"""
