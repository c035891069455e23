"""The data-path benchmarks: Beryl against a peer doing the same work on the same files.

``run`` is the command; ``measure`` runs and measures one process at a time, ``workspaces``
holds the generated data and the workspaces, ``ingest``, ``endpoints``, ``model`` and
``scaling`` are the benchmarks, ``report`` the table and ``data.json``. ``tasks.py`` is the
child side (one task per measured process), ``engines.py`` a separate measurement.
"""
