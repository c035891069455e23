"""The data-path benchmarks: Beryl against a peer doing the same work on the same files.

``run`` is the command; ``measure`` runs and measures one process at a time, ``workspaces``
holds the generated data sets and the workspaces, ``ingest``, ``benches``, ``passes`` and
``scaling`` are the benchmarks, ``report`` the table and ``data.json``. ``tasks.py`` is the
child side (one task per measured process; ``datagen.py`` and ``widegen.py`` generate the data
sets), ``barejob.py`` the bare job in another engine, ``engines.py`` a separate measurement.
"""
