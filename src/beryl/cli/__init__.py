"""The ``beryl`` command line: one group whose commands each parse their options, call one
library function and hand its result to ``beryl.cli.render``.

The commands live by what they work on: ``data`` (init, add-batch, ingest, dataset, predict),
``models`` (train, score, deploy, models), ``monitoring`` (diagnose, report, history),
``loop`` (run, schedule, cron, serve, apicalls) and ``configure`` (config upgrade). The library
takes the lock and records each command (``beryl.loop.commands``); ``main`` turns every error
into one line and its exit code.
"""

from __future__ import annotations

from beryl.cli import configure, data, loop, models, monitoring
from beryl.cli.base import cli, main

__all__ = ["cli", "configure", "data", "loop", "main", "models", "monitoring"]
