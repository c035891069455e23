"""Crash-safety harness: SIGKILL `beryl run` at random moments and check what readers see.

One trial takes a copy of a workspace whose production model is v0001, puts new CSV files in its
input folder, starts ``python -m beryl --config CFG run --no-apicalls`` and kills it with SIGKILL,
either after a random delay (a fraction of a measured pass) or the moment a stage leaves a trace
on disk (a new batch file, a new model version, a moved production pointer, ...). It then checks
the invariants *before* anything repairs the workspace (as a reader that only reads), runs the
next pass to completion, and checks the invariants again.

    harness = Harness(Path("/tmp/crash"), seed=0)
    harness.prepare()
    results = harness.run([harness.plan(i) for i in range(10)])
    print(format_table(results))

Used by ``tests/test_crash.py`` (a short run in CI) and ``scripts/crash_trials.py`` (the long
run: ``.venv/bin/python scripts/crash_trials.py --trials 200``).

Bugs it found (fixed in 237f238; tests/test_crash.py keeps a regression test for each):
- a kill after the candidate's F1 was recorded but before the pointer moved stranded a better
  candidate for good: the next pass counted its batches as judged and said "no new data";
- a kill after the pointer moved left beryl.sqlite's promotions and report.html behind
  production for good (the next pass had no new data, so nothing rewrote them);
- a kill between the pointer write and the log append lost the move from promotions.jsonl,
  and ``beryl models rollback`` then refused ("no earlier production version").
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from beryl import config
from beryl._io import TMP_PREFIX, sha256_file
from beryl.config import Settings
from beryl.data.dataset import BATCH_FOLDER, INGESTED_FILES_NAME, SNAPSHOT_NAME, Dataset, Manifest
from beryl.data.demo import add_batch, generate, init_workspace, write_csv
from beryl.data.schema import Schema
from beryl.loop.passes import should_promote
from beryl.model.deployment import check_deployment, read_manifest
from beryl.model.registry import ModelCard, Registry
from beryl.recovery import RECOVERY_FOLDER

BASE_VERSION = "v0001"
CANDIDATE = "v0002"
POLL_S = 0.001
PASS_TIMEOUT_S = 300.0
# The stages a pass goes through, in order; a kill is attributed to the one that was running.
STAGES = (
    "startup",
    "recover",
    "check",
    "ingest",
    "drift",
    "train",
    "score",
    "promote",
    "report",
    "finish",
)
# The stages the issue names: every run of the harness should land kills in each of them.
KEY_STAGES = ("ingest", "train", "score", "promote")
_NEXT_STAGE = {
    "recover": "check",
    "check": "ingest",
    "ingest": "drift",
    "data_drift": "drift",
    "drift_check": "train",
    "train": "score",
    # production's move is the promote step and the deploy and record steps after it
    "promote": "promote",
    "deploy": "promote",
    "record": "report",
    "report": "finish",
    "apicalls": "finish",
}
_PNG_END = b"IEND\xaeB`\x82"


# -- what a trial does ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchFile:
    """One file dropped into the input folder before the killed pass.

    kind: ``clean`` (new customers), ``noisy`` (45% flipped labels), ``inverted`` (90% flipped:
    a worse candidate), ``overlap`` (rows of an ingested file plus new ones), ``returning`` (a
    held-back demo file that repeats some ingested rows), ``renamed`` (a copy of an ingested
    file under a new name).
    """

    kind: str
    name: str
    rows: int = 0
    seed: int = 0

    def describe(self) -> str:
        return f"{self.kind}:{self.rows}" if self.rows else self.kind


@dataclass(frozen=True)
class Kill:
    """When to send SIGKILL.

    mode ``random``: ``fraction`` × the measured work time after the pass has started;
    ``startup``: ``fraction`` × the measured start-up time after spawning (before the lock);
    ``double``: like ``random``, then kill the following pass during its recovery too;
    ``target``: the moment ``TARGETS[target]`` fires.
    """

    mode: str
    fraction: float = 0.0
    target: str | None = None

    def describe(self) -> str:
        if self.mode == "target":
            return f"target {self.target}"
        return f"{self.mode} {self.fraction:.2f}"


@dataclass(frozen=True)
class TrialPlan:
    index: int
    files: tuple[BatchFile, ...]
    kill: Kill

    def describe(self) -> str:
        return f"{self.kill.describe()}; " + " ".join(f.describe() for f in self.files)


@dataclass(frozen=True)
class Failure:
    """One broken invariant."""

    phase: str  # "before" (after the kill, before any repair) or "after" (after the next pass)
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.phase}/{self.invariant}: {self.detail}"


@dataclass
class TrialResult:
    plan: TrialPlan
    workspace: Path
    killed: bool = False
    delay: float | None = None  # seconds from spawn to SIGKILL
    stage: str = "?"
    before: list[Failure] = field(default_factory=list)
    next_exit: int | None = None
    next_outcome: str = ""
    after: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Failure]:
        return [*self.before, *self.after]

    @property
    def ok(self) -> bool:
        return not self.failures


# -- kill triggers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trigger:
    """Fire when any path matching one of ``appears`` is new, one of ``changes`` changed, or the
    running pass has recorded ``step`` as finished in the history database."""

    appears: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    step: str | None = None


TARGETS: dict[str, Trigger] = {
    # ingestion: the batch is being written / exists but no manifest names it yet / committed
    "ingest-write": Trigger(
        appears=(f"ingesteddata/batches/{TMP_PREFIX}*", "ingesteddata/batches/*")
    ),
    "ingest-batch": Trigger(appears=("ingesteddata/batches/*.parquet",)),
    "ingest-snapshot": Trigger(changes=("ingesteddata/finaldata.csv",)),
    "ingest-manifest": Trigger(changes=("ingesteddata/dataset.json",)),
    # training: fitting, then registering the new version
    "train-fit": Trigger(step="drift_check"),
    "train-register": Trigger(
        appears=("models/versions/.staging-*", f"models/versions/{CANDIDATE}")
    ),
    "train-latest": Trigger(appears=(f"models/versions/{CANDIDATE}",)),
    # scoring: the candidate's F1 is recorded, production is being scored
    "score-candidate": Trigger(changes=("models/latestscore.txt",)),
    "score-production": Trigger(changes=(f"models/versions/{BASE_VERSION}/card.json",)),
    # promotion: move logged, pointer moved, deployment being materialised, link switched
    "promote-log": Trigger(changes=("models/promotions.jsonl",)),
    "promote-pointer": Trigger(changes=("models/production.json",)),
    "promote-materialise": Trigger(appears=(".production_deployment.d/*",)),
    "promote-switch": Trigger(changes=("production_deployment",)),
    # after the promotion: the report
    "report": Trigger(step="promote"),
}
# Targets whose trials need a candidate that gets promoted (a clean batch of new customers).
PROMOTING_TARGETS = {
    "score-candidate",
    "score-production",
    "promote-log",
    "promote-pointer",
    "promote-materialise",
    "promote-switch",
    "report",
}


def _signature(path: Path) -> tuple[int, int, int, str] | None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    link = os.readlink(path) if path.is_symlink() else ""
    return (info.st_ino, info.st_size, info.st_mtime_ns, link)


class _Watch:
    """Evaluates a ``Trigger`` against a workspace, relative to the state before the spawn."""

    def __init__(self, root: Path, trigger: Trigger, after_run: int) -> None:
        self.root = root
        self.trigger = trigger
        self.after_run = after_run
        self.seen = {pattern: set(self._glob(pattern)) for pattern in trigger.appears}
        self.signatures = {name: _signature(root / name) for name in trigger.changes}
        self._last_db_poll = 0.0

    def _glob(self, pattern: str) -> list[str]:
        return [str(p) for p in self.root.glob(pattern)]

    def fired(self) -> bool:
        for pattern, seen in self.seen.items():
            if any(p not in seen for p in self._glob(pattern)):
                return True
        for name, before in self.signatures.items():
            if _signature(self.root / name) != before:
                return True
        if self.trigger.step is not None and time.monotonic() - self._last_db_poll > 0.002:
            self._last_db_poll = time.monotonic()
            run = read_run(self.root, self.after_run)
            return run is not None and self.trigger.step in run.steps
        return False


# -- the history database, read-only --------------------------------------------------------------
@dataclass(frozen=True)
class RunState:
    id: int
    status: str
    steps: tuple[str, ...]


def read_run(root: Path, after_run: int) -> RunState | None:
    """The first run after ``after_run`` in the history database, read without writing."""
    db = root / "beryl.sqlite"
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=0.2)
        try:
            row = conn.execute(
                "SELECT id, status FROM runs WHERE id > ? ORDER BY id LIMIT 1", (after_run,)
            ).fetchone()
            if row is None:
                return None
            steps = conn.execute(
                "SELECT name FROM steps WHERE run_id = ? ORDER BY id", (row[0],)
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return RunState(int(row[0]), str(row[1]), tuple(str(s[0]) for s in steps))


def _query(root: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = root / "beryl.sqlite"
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def last_run_id(root: Path) -> int:
    rows = _query(root, "SELECT COALESCE(MAX(id), 0) FROM runs")
    return int(rows[0][0])


# -- running beryl --------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERYL_")}
    env["COLUMNS"] = "200"
    return env


def _command(config_path: Path, *extra: str) -> list[str]:
    beryl = [sys.executable, "-m", "beryl", "--config", str(config_path)]
    return [*beryl, "run", "--no-apicalls", *extra]


def run_pass(config_path: Path, log: Path) -> tuple[int, dict[str, Any]]:
    """Run one pass to completion; its exit code and its ``--json`` answer."""
    with log.open("w") as out:
        done = subprocess.run(
            _command(config_path, "--json"),
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
            env=_env(),
            timeout=PASS_TIMEOUT_S,
            check=False,
        )
        out.write(done.stdout)
    try:
        answer = json.loads(done.stdout[done.stdout.index("{") :])
    except ValueError:
        answer = {}
    return done.returncode, answer


@dataclass
class _Spawned:
    killed: bool
    exit_code: int | None
    delay: float | None = None  # seconds from spawn to SIGKILL
    started_after: float | None = None  # seconds from spawn until the pass's run row appeared
    hung: bool = False  # killed because it ran past PASS_TIMEOUT_S


def spawn_and_kill(
    root: Path,
    config_path: Path,
    log: Path,
    after_run: int,
    *,
    delay_after_spawn: float | None = None,
    delay_after_start: float | None = None,
    trigger: Trigger | None = None,
) -> _Spawned:
    """Start a pass and SIGKILL it when the first of the given conditions holds."""
    watch = _Watch(root, trigger, after_run) if trigger is not None else None
    started: float | None = None
    next_db_poll = 0.0
    with log.open("w") as out:
        proc = subprocess.Popen(
            _command(config_path), stdout=out, stderr=subprocess.STDOUT, env=_env()
        )
        spawned = time.monotonic()
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if started is None and now >= next_db_poll:
                    next_db_poll = now + 0.003
                    if read_run(root, after_run) is not None:
                        started = now
                hung = now - spawned > PASS_TIMEOUT_S
                if (
                    hung
                    or (delay_after_spawn is not None and now - spawned >= delay_after_spawn)
                    or (
                        delay_after_start is not None
                        and started is not None
                        and now - started >= delay_after_start
                    )
                    or (watch is not None and watch.fired())
                ):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    if proc.wait() == -signal.SIGKILL:
                        since = None if started is None else started - spawned
                        return _Spawned(True, -signal.SIGKILL, now - spawned, since, hung)
                    break  # it had exited by itself just before
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:  # an exception in the watcher: never leave the child behind
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    if started is None and read_run(root, after_run) is not None:
        started = time.monotonic()
    since = None if started is None else started - spawned
    return _Spawned(False, proc.returncode, started_after=since)


# -- invariants -----------------------------------------------------------------------------------
def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


def _is_temporary(root: Path, path: Path) -> bool:
    """A writer's private file: readers never open these (atomic writes, staging folders)."""
    parts = path.relative_to(root).parts
    return any(
        p.startswith(TMP_PREFIX) or p.startswith(".staging-") or ".link-tmp-" in p for p in parts
    )


def _is_recovered(root: Path, path: Path) -> bool:
    """Inside a recovery folder: what a repair moved aside (never read by Beryl, kept as it
    was, damage included)."""
    return RECOVERY_FOLDER in path.relative_to(root).parts


def leftovers(root: Path) -> list[str]:
    """Temporary files, staging folders and temporary links anywhere in the workspace (the
    recovery folders aside: what a repair moved there keeps its name)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != RECOVERY_FOLDER]
        for name in [*dirs, *files]:
            if name.startswith(TMP_PREFIX) or name.startswith(".staging-") or ".link-tmp-" in name:
                found.append(_rel(root, Path(folder) / name))
    return sorted(found)


def _check_file(path: Path) -> str | None:
    """Parse one file the way a reader would; the problem, or None."""
    name, suffix = path.name, path.suffix
    try:
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if name == "dataset.json":
                Manifest.from_dict(data)
            elif name == "card.json":
                card = ModelCard.from_dict(data)
                if card.id != path.parent.name:
                    return f"card of {path.parent.name} says it is {card.id}"
            elif name == "manifest.json":
                missing = {"version", "model_sha256"} - set(data)
                if missing:
                    return f"manifest lacks {sorted(missing)}"
            elif name == "production.json" and "version" not in data:
                return "pointer names no version"
        elif suffix == ".jsonl":
            lines = path.read_bytes().split(b"\n")
            complete = lines[:-1]  # the part after the last newline is a torn line, if any
            for line in complete:
                if line.strip():
                    json.loads(line)
        elif suffix == ".parquet":
            pq.read_table(path)
        elif suffix == ".npy":
            np.load(path, allow_pickle=False)
        elif suffix == ".csv":
            pd.read_csv(path)
        elif suffix == ".pkl":
            pickle.loads(path.read_bytes())
        elif suffix == ".png":
            data = path.read_bytes()
            if not data.startswith(b"\x89PNG") or not data.endswith(_PNG_END):
                return "not a complete PNG image"
        elif suffix == ".html":
            if not path.read_text(encoding="utf-8").rstrip().endswith("</html>"):
                return "HTML page is cut short"
        elif name == "latestscore.txt":
            text = path.read_text(encoding="utf-8").strip()
            if text:
                float(text)
        elif suffix == ".txt":
            path.read_text(encoding="utf-8")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


def check_readable(root: Path) -> list[str]:
    """Every file a reader may open parses (temporary files and staging folders excepted)."""
    problems = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if _is_temporary(root, path) or name.startswith("beryl.sqlite") or path.is_symlink():
                continue
            if _is_recovered(root, path):
                continue
            problem = _check_file(path)
            if problem:
                problems.append(f"{_rel(root, path)}: {problem}")
    return problems


def canonical_rows(frame: pd.DataFrame, schema: Schema) -> list[tuple[Any, ...]]:
    """Rows as plain tuples (floats, ints, str, None) so CSV and Parquet rows compare equal."""
    columns = []
    for column in schema.columns:
        values = frame[column].tolist()
        if column in schema.numeric:
            columns.append([None if pd.isna(v) else float(v) for v in values])
        elif column == schema.target and schema.label_is_numeric:
            columns.append([int(v) for v in values])
        else:
            columns.append([None if pd.isna(v) else str(v).strip() for v in values])
    return list(zip(*columns, strict=True))


def read_csv_rows(path: Path, schema: Schema) -> list[tuple[Any, ...]]:
    frame = pd.read_csv(path, dtype={c: str for c in schema.text_columns})
    return canonical_rows(frame, schema)


@dataclass
class _Checker:
    """The invariants of one workspace; ``failures`` collects what broke."""

    settings: Settings
    phase: str
    failures: list[Failure] = field(default_factory=list)

    def fail(self, invariant: str, detail: str) -> None:
        self.failures.append(Failure(self.phase, invariant, detail))

    @property
    def root(self) -> Path:
        return self.settings.root

    def guard(self, invariant: str, check: Callable[[], None]) -> None:
        try:
            check()
        except Exception as exc:
            self.fail(invariant, f"{type(exc).__name__}: {exc}"[:400])

    # (a) readers never see half-written files
    def readable(self) -> None:
        for problem in check_readable(self.root):
            self.fail("readable", problem)

    # (b) the pointer names an intact version that loads; the deployment is self-consistent
    def production(self) -> None:
        registry = Registry(self.settings.model_folder)
        version = registry.production()
        if version is None:
            self.fail("production", "models/production.json is missing")
            return
        if not registry.verify(version):
            self.fail("production", f"model file of {version} does not match its card's sha256")
            return
        model = registry.pipeline(version)
        features = self._test_features(registry.card(version))
        if len(model.predict(features)) != len(features):
            self.fail("production", f"{version} does not predict one label per row")

    def deployment(self, *, current: bool) -> None:
        prod = self.settings.prod_folder
        if not check_deployment(self.settings):
            self.fail("deployment", f"{prod.name}/trainedmodel.pkl does not match its manifest")
            return
        manifest = read_manifest(self.settings)
        registry = Registry(self.settings.model_folder)
        deployed = str(manifest["version"])
        if manifest["model_sha256"] != registry.card(deployed).model_sha256:
            self.fail("deployment", f"manifest sha256 differs from the card of {deployed}")
        model = pickle.loads((prod / "trainedmodel.pkl").read_bytes())
        features = self._test_features(registry.card(deployed))
        if len(model.predict(features)) != len(features):
            self.fail("deployment", f"deployed {deployed} does not predict")
        pointer = registry.production()
        if current and deployed != pointer:
            self.fail("deployment", f"{prod.name} holds {deployed} but production is {pointer}")

    def _test_features(self, card: ModelCard) -> pd.DataFrame:
        schema = Schema.from_dict(card.schema)
        test = self.settings.test_data
        path = test if test.is_file() else sorted(test.glob("*.csv"))[0]
        frame = pd.read_csv(path, dtype={c: str for c in schema.text_columns}, nrows=20)
        return frame[schema.features]

    # (c) the dataset: every batch named exists with its row count; no duplicate rows
    def dataset(self) -> list[tuple[Any, ...]]:
        dataset = Dataset(self.settings.output_folder)
        rows: list[tuple[Any, ...]] = []
        if dataset.schema is None:
            self.fail("dataset", "dataset.json names no schema")
            return rows
        for batch in dataset.batches:
            path = dataset.batch_path(batch.id)
            if not path.exists():
                self.fail("dataset", f"batch {batch.id} is named but {path.name} is missing")
                continue
            found = pq.read_metadata(path).num_rows
            if found != batch.rows:
                self.fail("dataset", f"batch {batch.id} holds {found} rows, recorded {batch.rows}")
            hashes = np.load(dataset.hashes_path(batch.id), allow_pickle=False)
            if len(hashes) != batch.rows:
                self.fail("dataset", f"batch {batch.id} has {len(hashes)} row hashes")
            rows += canonical_rows(pq.read_table(path).to_pandas(), dataset.schema)
        doubled = len(rows) - len(set(rows))
        if doubled:
            self.fail(
                "dataset", f"{doubled} duplicate row(s) across {len(dataset.batches)} batches"
            )
        return rows

    def promotion_log(self) -> None:
        registry = Registry(self.settings.model_folder)
        if not registry.log_path.exists():
            self.fail("promotion-log", "promotions.jsonl is missing")
            return
        lines = registry.log_path.read_bytes().split(b"\n")
        for number, line in enumerate(lines[:-1], 1):
            if line.strip():
                try:
                    json.loads(line)
                except ValueError:
                    self.fail("promotion-log", f"line {number} of promotions.jsonl is torn")

    # -- after the next pass only -----------------------------------------------------------------
    def no_leftovers(self) -> None:
        found = leftovers(self.root)
        if found:
            self.fail("leftovers", ", ".join(found[:5]) + (" ..." if len(found) > 5 else ""))

    def derived_files(self, rows: list[tuple[Any, ...]]) -> None:
        dataset = Dataset(self.settings.output_folder)
        assert dataset.schema is not None
        snapshot = self.settings.output_folder / SNAPSHOT_NAME
        if not snapshot.exists():
            self.fail("finaldata", f"{SNAPSHOT_NAME} is missing")
        elif read_csv_rows(snapshot, dataset.schema) != rows:
            self.fail("finaldata", f"{SNAPSHOT_NAME} differs from the union of the batches")
        listing = self.settings.output_folder / INGESTED_FILES_NAME
        names = listing.read_text(encoding="utf-8").splitlines() if listing.exists() else None
        if names != dataset.ingested_names():
            self.fail(
                "ingestedfiles", f"{INGESTED_FILES_NAME} {names} ≠ {dataset.ingested_names()}"
            )
        known = {b.id for b in dataset.batches}
        folder = self.settings.output_folder / BATCH_FOLDER
        for path in sorted(folder.iterdir()):
            batch_id, _, rest = path.name.partition(".")
            if batch_id not in known or rest not in ("parquet", "hashes.npy", "batch.json"):
                self.fail("orphans", f"{BATCH_FOLDER}/{path.name} is named by no batch")
        for batch in dataset.batches:  # every batch carries its record (dataset.json's backup)
            if not dataset.record_path(batch.id).exists():
                self.fail("orphans", f"batch {batch.id} has no {batch.id}.batch.json")

    def nothing_lost(self, rows: list[tuple[Any, ...]]) -> None:
        dataset = Dataset(self.settings.output_folder)
        assert dataset.schema is not None
        wanted: set[tuple[Any, ...]] = set()
        recorded = {(r.name, r.sha256) for r in dataset.files}
        for path in sorted(self.settings.input_folder.glob("*.csv")):
            wanted |= set(read_csv_rows(path, dataset.schema))
            if (path.name, sha256_file(path)) not in recorded:
                self.fail("ingestion-record", f"input file {path.name} is not in dataset.json")
        have = set(rows)
        if len(rows) != len(wanted) or have != wanted:
            self.fail(
                "rows",
                f"dataset has {len(rows)} rows ({len(have)} unique); the input files hold "
                f"{len(wanted)} unique rows ({len(wanted - have)} missing, "
                f"{len(have - wanted)} foreign)",
            )

    def decision(self, margin: float, next_outcome: str) -> None:
        """Production is where an unkilled pass would have put it."""
        registry = Registry(self.settings.model_folder)
        dataset = Dataset(self.settings.output_folder)
        batches = {b.id for b in dataset.batches}
        judged = [
            c
            for c in registry.cards()
            if c.f1 is not None and set(c.training["batches"]) == batches
        ]
        pointer = registry.require_production()
        base_f1 = registry.card(BASE_VERSION).f1
        if not judged or base_f1 is None:
            self.fail("decision", "no scored model was trained on the whole dataset")
            return
        candidate = judged[-1]
        assert candidate.f1 is not None
        promote, _ = should_promote(candidate.f1, base_f1, margin)
        prod_card = registry.card(pointer)
        if promote and (set(prod_card.training["batches"]) != batches or prod_card.f1 is None):
            self.fail(
                "decision",
                f"candidate {candidate.id} (F1 {candidate.f1:.4f}) beats {BASE_VERSION} "
                f"(F1 {base_f1:.4f}) but production is still {pointer}; the next pass said "
                f"{next_outcome or '?'}",
            )
        elif not promote and pointer != BASE_VERSION:
            self.fail(
                "decision",
                f"production moved to {pointer} although candidate {candidate.id} "
                f"(F1 {candidate.f1:.4f}) does not beat {BASE_VERSION} (F1 {base_f1:.4f})",
            )

    def records_follow_pointer(self, next_outcome: str) -> None:
        """The promotion log, the history database and the report agree with the pointer."""
        registry = Registry(self.settings.model_folder)
        pointer = registry.require_production()
        moves = registry.moves()
        if not moves or moves[-1].to_version != pointer:
            last = moves[-1].to_version if moves else None
            self.fail("promotion-log", f"last logged move goes to {last}, production is {pointer}")
        promoted = _query(self.root, "SELECT to_version FROM promotions ORDER BY id")
        last_recorded = promoted[-1][0] if promoted else None
        if last_recorded != pointer:
            self.fail(
                "history",
                f"last promotion in beryl.sqlite goes to {last_recorded}, production is {pointer}",
            )
        report = self.settings.model_folder / "report.html"
        title = f"Beryl model report: {pointer}"
        if report.exists() and title not in report.read_text(encoding="utf-8"):
            self.fail("report", f"report.html does not describe production {pointer}")


def check_before_repair(settings: Settings) -> list[Failure]:
    """Invariants right after a kill, checked by a reader that only reads."""
    checker = _Checker(settings, "before")
    checker.guard("readable", checker.readable)
    checker.guard("production", checker.production)
    checker.guard("deployment", lambda: checker.deployment(current=False))
    checker.guard("dataset", checker.dataset)
    checker.guard("promotion-log", checker.promotion_log)
    return checker.failures


def check_after_pass(settings: Settings, exit_code: int | None, outcome: str) -> list[Failure]:
    """Invariants after the next, unkilled pass."""
    checker = _Checker(settings, "after")
    if exit_code != 0:
        checker.fail("exit-code", f"the next pass exited {exit_code}")
    checker.guard("readable", checker.readable)
    checker.guard("production", checker.production)
    checker.guard("deployment", lambda: checker.deployment(current=True))
    checker.guard("promotion-log", checker.promotion_log)
    checker.guard("leftovers", checker.no_leftovers)
    rows: list[tuple[Any, ...]] = []

    def dataset() -> None:
        rows.extend(checker.dataset())

    checker.guard("dataset", dataset)
    checker.guard("finaldata", lambda: checker.derived_files(rows))
    checker.guard("rows", lambda: checker.nothing_lost(rows))
    checker.guard("decision", lambda: checker.decision(settings.promotion_margin, outcome))
    checker.guard("records", lambda: checker.records_follow_pointer(outcome))
    return checker.failures


# -- the harness ----------------------------------------------------------------------------------
def stage_of(root: Path, after_run: int, promoting: bool, first: str = "check") -> str:
    """The stage the killed pass was in, from its steps in the history database.

    Before its first step a pass recovers and then checks for new data; ``first`` names that
    stretch ("recover" when the kill aimed at recovery).
    """
    run = read_run(root, after_run)
    if run is None:
        return "startup"
    if run.status != "running":
        return "finish"
    if not run.steps:
        return first
    last = run.steps[-1]
    if last == "score":
        return "promote" if promoting else "finish"
    return _NEXT_STAGE.get(last, f"after-{last}")


def _promoting(settings: Settings) -> bool:
    """Whether the killed pass was going to promote (its candidate was scored better)."""
    registry = Registry(settings.model_folder)
    if registry.production() != BASE_VERSION:
        return True
    try:
        candidate, base = registry.card(registry.latest()), registry.card(BASE_VERSION)
    except Exception:
        return False
    if candidate.id == BASE_VERSION or candidate.f1 is None or base.f1 is None:
        return False
    return should_promote(candidate.f1, base.f1, settings.promotion_margin)[0]


class Harness:
    """Builds a base workspace once, then runs trials on copies of it."""

    def __init__(
        self,
        workdir: Path,
        *,
        seed: int = 0,
        rows: int = 400,
        keep: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.workdir = workdir
        self.seed = seed
        self.rows = rows
        self.keep = keep
        self.log = log or (lambda _line: None)
        self.base = workdir / "base"
        self.held = workdir / "held"
        self.startup_s = 1.5
        self.work_s = 1.0
        self.base_run = 0

    # -- setup ------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Build the base workspace (production v0001) and time one unkilled pass."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.held, ignore_errors=True)
        ws = init_workspace(self.base, rows=self.rows, files=2, seed=self.seed, test_rows=400)
        data = json.loads(ws.config.read_text())
        data["package_index_url"] = "http://127.0.0.1:9"  # never reach the internet
        ws.config.write_text(json.dumps(data, indent=2) + "\n")
        # dataset2.csv (which repeats some rows of dataset1.csv) comes back in later trials;
        # a legacy file with 80% flipped labels makes v0001 weak: clean batches beat it, while
        # batches with flipped labels ("inverted") make candidates that stay out of production.
        self.held.mkdir()
        ws.source_files[1].rename(self.held / ws.source_files[1].name)
        add_batch(
            ws.root / "sourcedata", "legacy.csv", rows=300, seed=self.seed + 7, label_noise=0.8
        )
        code, answer = run_pass(ws.config, self.workdir / "base-pass.log")
        if code != 0 or answer.get("outcome") != "promoted":
            raise RuntimeError(
                f"the base pass failed ({code}): see {self.workdir / 'base-pass.log'}"
            )
        self.base_run = last_run_id(self.base)
        self._calibrate()

    def _calibrate(self) -> None:
        """One unkilled pass on a copy: its timings, and a check that the checks pass."""
        plan = TrialPlan(-1, (BatchFile("clean", "calibration.csv", 400, 999),), Kill("none"))
        settings = self._trial_workspace(plan)
        watched = self._spawn(settings, "calibration", self.base_run)
        if watched.exit_code != 0 or watched.started_after is None:
            raise RuntimeError(f"the calibration pass failed ({watched.exit_code})")
        self.startup_s = watched.started_after
        # The work: from taking the lock to the end of the last step, as the run recorded it.
        recorded = _query(
            settings.root, "SELECT duration_s FROM runs WHERE id > ?", (self.base_run,)
        )
        self.work_s = max(float(recorded[0][0]), 0.2)
        failures = check_after_pass(settings, 0, "promoted")
        if failures:
            raise RuntimeError(
                "an unkilled pass breaks the invariants (a bug in the checks or in beryl):\n"
                + "\n".join(map(str, failures))
            )
        if not self.keep:
            shutil.rmtree(settings.root.parent, ignore_errors=True)
        self.log(f"calibration: start-up {self.startup_s:.2f}s, work {self.work_s:.2f}s")

    # -- plans ------------------------------------------------------------------------------------
    def _files(self, rng: random.Random, index: int, promoting: bool) -> tuple[BatchFile, ...]:
        files = [BatchFile("clean", f"new-{index}-0.csv", rng.randint(300, 500), 100 + index)]
        if not promoting:
            kinds = ["clean", "clean", "noisy", "inverted", "overlap", "returning"]
            files = [
                BatchFile(kind, f"new-{index}-{j}.csv", rng.randint(100, 500), 100 * index + j)
                for j, kind in enumerate(rng.sample(kinds, rng.choice([1, 1, 1, 2, 3])))
            ]
        if rng.random() < 0.15:
            files.append(BatchFile("renamed", f"copy-{index}.csv"))
        return tuple(
            BatchFile(f.kind, f.name, 0, 0) if f.kind in ("returning", "renamed") else f
            for f in files
        )

    def plan(self, index: int) -> TrialPlan:
        """Trial ``index``: a random kill (two in three) or a stage-targeted one (one in three)."""
        if index % 3 == 2:
            names = list(TARGETS)
            return self.targeted_plan(index, names[(index // 3) % len(names)])
        return self.random_plan(index)

    def random_plan(self, index: int) -> TrialPlan:
        rng = random.Random(f"{self.seed}-random-{index}")
        roll = rng.random()
        mode = "startup" if roll < 0.1 else "double" if roll < 0.25 else "random"
        return TrialPlan(index, self._files(rng, index, False), Kill(mode, rng.uniform(0, 1.15)))

    def targeted_plan(self, index: int, target: str) -> TrialPlan:
        rng = random.Random(f"{self.seed}-target-{index}")
        files = self._files(rng, index, target in PROMOTING_TARGETS)
        return TrialPlan(index, files, Kill("target", target=target))

    # -- trials -----------------------------------------------------------------------------------
    def _trial_workspace(self, plan: TrialPlan) -> Settings:
        trial = self.workdir / ("calibration" if plan.index < 0 else f"trial-{plan.index:04d}")
        shutil.rmtree(trial, ignore_errors=True)
        trial.mkdir(parents=True)
        root = trial / "ws"
        shutil.copytree(self.base, root, symlinks=True)
        settings = config.load(root / "config.json")
        source = settings.input_folder
        for spec in plan.files:
            if spec.kind == "clean":
                add_batch(source, spec.name, rows=spec.rows, seed=spec.seed)
            elif spec.kind in ("noisy", "inverted"):
                noise = 0.45 if spec.kind == "noisy" else 0.9
                add_batch(source, spec.name, rows=spec.rows, seed=spec.seed, label_noise=noise)
            elif spec.kind == "overlap":
                old = pd.read_csv(source / "dataset1.csv", dtype={"corporation": str})
                fresh = generate(spec.rows, spec.seed)
                write_csv(
                    pd.concat([old.head(spec.rows // 3), fresh], ignore_index=True),
                    source / spec.name,
                )
            elif spec.kind == "returning":
                for held in self.held.glob("*.csv"):
                    shutil.copyfile(held, source / held.name)
            elif spec.kind == "renamed":
                shutil.copyfile(source / "dataset1.csv", source / spec.name)
        return settings

    def _spawn(self, settings: Settings, name: str, after_run: int, **when: Any) -> _Spawned:
        log = settings.root.parent / f"{name}.log"
        return spawn_and_kill(settings.root, settings.config_path, log, after_run, **when)

    def run_trial(self, plan: TrialPlan) -> TrialResult:
        began = time.monotonic()
        settings = self._trial_workspace(plan)
        root = settings.root
        result = TrialResult(plan, root)
        logs = root.parent
        kill = plan.kill
        if kill.mode == "target":
            assert kill.target is not None
            watched = self._spawn(settings, "killed", self.base_run, trigger=TARGETS[kill.target])
        elif kill.mode == "startup":
            delay = kill.fraction * self.startup_s
            watched = self._spawn(settings, "killed", self.base_run, delay_after_spawn=delay)
        else:
            delay = kill.fraction * self.work_s
            watched = self._spawn(settings, "killed", self.base_run, delay_after_start=delay)
        result.killed, result.delay = watched.killed, watched.delay
        if watched.hung:
            hang = f"the pass ran past {PASS_TIMEOUT_S:.0f}s (see {logs / 'killed.log'})"
            result.before.append(Failure("before", "hang", hang))
        result.stage = (
            stage_of(root, self.base_run, _promoting(settings)) if watched.killed else "completed"
        )
        if not watched.killed and watched.exit_code != 0:
            result.notes.append(f"the pass to be killed exited {watched.exit_code} by itself")
        result.before += check_before_repair(settings)
        if kill.mode == "double" and watched.killed:
            # Kill the following pass too, while it repairs what the first kill left.
            delay = min(kill.fraction, 1.0) * 0.05
            second = self._spawn(
                settings, "killed-again", self.base_run + 1, delay_after_start=delay
            )
            if second.killed:
                again = stage_of(root, self.base_run + 1, _promoting(settings), "recover")
                result.stage += f"+{again}"
                result.before += check_before_repair(settings)
        result.next_exit, answer = run_pass(settings.config_path, logs / "next.log")
        result.next_outcome = str(answer.get("outcome", ""))
        result.after = check_after_pass(settings, result.next_exit, result.next_outcome)
        stale = _query(root, "SELECT COUNT(*) FROM runs WHERE status = 'running'")[0][0]
        if stale:
            result.notes.append(f"{stale} killed run(s) still marked 'running' in beryl.sqlite")
        result.seconds = time.monotonic() - began
        if result.ok and not self.keep:
            shutil.rmtree(root.parent, ignore_errors=True)
        return result

    def run(
        self,
        plans: Iterable[TrialPlan],
        *,
        jobs: int = 1,
        on_result: Callable[[TrialResult], None] | None = None,
    ) -> list[TrialResult]:
        """Run the trials (``jobs`` at a time); results in plan order."""
        plans = list(plans)
        lock = threading.Lock()

        def one(plan: TrialPlan) -> TrialResult:
            result = self.run_trial(plan)
            if on_result is not None:
                with lock:
                    on_result(result)
            return result

        if jobs <= 1:
            return [one(plan) for plan in plans]
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(one, plans))


# -- reporting ------------------------------------------------------------------------------------
HEADER = f"{'trial':>5}  {'kill':<26} {'delay':>6}  {'stage':<16} {'before':<6} {'next':<16} after"


def format_row(result: TrialResult) -> str:
    delay = f"{result.delay:.2f}s" if result.delay is not None else "-"
    before = "ok" if not result.before else "FAIL"
    after = "ok" if not result.after else "FAIL"
    nxt = f"{result.next_exit} {result.next_outcome}"
    line = (
        f"{result.plan.index:>5}  {result.plan.kill.describe():<26} {delay:>6}  "
        f"{result.stage:<16} {before:<6} {nxt:<16} {after}"
    )
    for failure in result.failures:
        line += f"\n{'':>7}! {failure}"
    return line


def format_table(results: list[TrialResult]) -> str:
    return "\n".join([HEADER, *(format_row(r) for r in results)])


def stage_counts(results: Iterable[TrialResult]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for result in results:
        if result.killed:
            counts.update(result.stage.split("+"))
    return counts


def summary(results: list[TrialResult]) -> str:
    """The final line: where the kills landed and whether every invariant held."""
    counts = stage_counts(results)
    kills = sum(1 for r in results if r.killed)
    order = {name: i for i, name in enumerate(STAGES)}
    stages = ", ".join(
        f"{s}: {n}" for s, n in sorted(counts.items(), key=lambda kv: order.get(kv[0], 99))
    )
    line = f"{len(results)} trials: {kills} kills landed in stages {{{stages}}}"
    failed = [r for r in results if not r.ok]
    if not failed:
        return line + ", all invariants held"
    broken = Counter(f.invariant for r in failed for f in r.failures)
    text = ", ".join(f"{k} ×{n}" for k, n in broken.most_common())
    return line + f", {len(failed)} trial(s) broke invariants ({text})"


def default_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="beryl-crash-"))
