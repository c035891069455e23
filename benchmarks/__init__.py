"""Beryl's benchmarks against peers: ``serving/`` and ``data/``, helpers both use in ``common``.

Run from the repository root, as scripts or as modules:

    .venv/bin/python benchmarks/serving/run.py     # or: .venv/bin/python -m benchmarks.serving.run
    .venv/bin/python benchmarks/data/run.py        # or: .venv/bin/python -m benchmarks.data.run
"""
