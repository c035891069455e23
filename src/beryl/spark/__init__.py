"""The Spark engine (``engine: "spark"``): ingestion and training on a Spark cluster.

Nothing here is imported unless the workspace's ``engine`` is ``"spark"``; it needs the
``spark`` extra (``pip install 'beryl[spark]'``) and Java 17 or newer. ``session`` starts or
joins the Spark session, ``ingest`` reads new files with Beryl's own parser inside Spark tasks
and deduplicates them by row hash, ``train`` fits the model with MLlib.
"""
