"""Crash safety: SIGKILL `beryl run` at random moments and in chosen stages (the short CI run).

Each trial kills a real ``python -m beryl run`` subprocess, checks what a reader sees before any
repair, runs the next pass and checks again (see tests/crash_harness.py for the invariants). The
long run is ``.venv/bin/python scripts/crash_trials.py --trials 200``: it runs
``test_crash_trials`` alone, with its options in the ``BERYL_CRASH_*`` variables (see ``Options``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.crash_harness import (
    HEADER,
    KEY_STAGES,
    Harness,
    TrialResult,
    check_after_pass,
    check_before_repair,
    check_readable,
    format_row,
    format_table,
    stage_counts,
    summary,
)

from beryl import config
from beryl.data.demo import init_workspace

SEED = 20240611
RANDOM_TRIALS = 6
# One stage-targeted kill per stage the issue names (and the ingestion commit and the report).
TARGETED = (
    "ingest-batch",
    "ingest-manifest",
    "train-fit",
    "train-register",
    "score-candidate",
    "promote-log",
    "promote-pointer",
    "report",
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
LONG_RUN = "BERYL_CRASH_TRIALS" in os.environ  # scripts/crash_trials.py: no time limit


@dataclass(frozen=True)
class Options:
    """The run's options: the CI run's when no ``BERYL_CRASH_*`` variable is set.

    ``BERYL_CRASH_TRIALS`` (the CI run: ``RANDOM_TRIALS`` random kills and one kill per stage
    in ``TARGETED``; else that many of ``Harness.plan``'s trials), ``BERYL_CRASH_SEED`` (``SEED``),
    ``BERYL_CRASH_JOBS`` (1: trials run at once), ``BERYL_CRASH_WORKDIR`` (a pytest temporary
    folder), ``BERYL_CRASH_KEEP`` (``1``: keep every trial's workspace, not only failed ones).
    """

    trials: int | None
    seed: int
    jobs: int
    workdir: Path | None
    keep: bool

    @classmethod
    def from_environment(cls) -> Options:
        env = os.environ
        trials, workdir = env.get("BERYL_CRASH_TRIALS"), env.get("BERYL_CRASH_WORKDIR")
        return cls(
            trials=int(trials) if trials else None,
            seed=int(env.get("BERYL_CRASH_SEED") or SEED),
            jobs=int(env.get("BERYL_CRASH_JOBS") or 1),
            workdir=Path(workdir) if workdir else None,
            keep=env.get("BERYL_CRASH_KEEP", "") not in ("", "0"),
        )


@pytest.fixture(scope="module")
def options() -> Options:
    return Options.from_environment()


@pytest.fixture(scope="module")
def started() -> float:
    """When the harness started preparing (the long run reports its time from there)."""
    return time.monotonic()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, options: Options, started: float) -> Harness:
    """A base workspace (production v0001) and one timed, unkilled pass."""
    workdir = options.workdir or tmp_path_factory.mktemp("crash")
    prepared = Harness(workdir, seed=options.seed, rows=400, keep=options.keep, log=print)
    prepared.prepare()
    return prepared


@pytest.fixture(scope="module")
def trials(harness: Harness, options: Options) -> dict[str, TrialResult]:
    """Run every trial once, printing a row as each ends; keyed by target name, or
    ``random-<i>`` for the random kills (``trial-<i>`` with ``BERYL_CRASH_TRIALS``)."""
    if options.trials is None:
        plans = [harness.random_plan(i) for i in range(RANDOM_TRIALS)]
        plans += [harness.targeted_plan(RANDOM_TRIALS + i, t) for i, t in enumerate(TARGETED)]
        keys = [f"random-{i}" for i in range(RANDOM_TRIALS)] + list(TARGETED)
    else:
        plans = [harness.plan(i) for i in range(options.trials)]
        keys = [f"trial-{i}" for i in range(options.trials)]
    print(HEADER, flush=True)

    def show(result: TrialResult) -> None:
        print(format_row(result), flush=True)

    results = harness.run(plans, jobs=options.jobs, on_result=show)
    return dict(zip(keys, results, strict=True))


def _table(trials: dict[str, TrialResult]) -> str:
    return format_table(list(trials.values()))


@pytest.mark.timeout(0 if LONG_RUN else 300)
def test_crash_trials(trials: dict[str, TrialResult], started: float) -> None:
    """Every trial keeps every invariant; prints the summary (what the long run shows with -s):
    where the kills landed, the notes, the stages no kill reached, where failed trials are."""
    results = list(trials.values())
    print(f"\n{time.monotonic() - started:.0f}s; {summary(results)}")
    notes = Counter(note for r in results for note in r.notes)
    for note, count in notes.most_common():
        print(f"note ({count} trial(s)): {note}")
    missed = [s for s in KEY_STAGES if not stage_counts(results)[s]]
    if missed:
        print(f"no kill landed in: {', '.join(missed)} (run more trials)")
    failed = [r for r in results if not r.ok]
    if failed:
        print("failed trials kept in: " + ", ".join(str(r.workspace.parent) for r in failed))
    assert not failed, summary(results)


def test_every_kill_leaves_a_workspace_that_readers_and_the_next_pass_can_use(
    trials: dict[str, TrialResult],
) -> None:
    broken = [
        f"trial {r.plan.index} ({r.plan.describe()}; killed in {r.stage}): {failure}"
        for r in trials.values()
        for failure in r.failures
    ]
    assert not broken, "invariants broke:\n" + "\n".join(broken) + "\n\n" + _table(trials)


def test_kills_land_in_ingestion_training_scoring_and_promotion(
    trials: dict[str, TrialResult],
) -> None:
    counts = stage_counts(trials.values())
    missed = [stage for stage in KEY_STAGES if not counts[stage]]
    assert not missed, f"no kill landed in {missed}\n\n{_table(trials)}"
    for target, stage in (
        ("ingest-batch", "ingest"),
        ("train-fit", "train"),
        ("score-candidate", "score"),
        ("promote-pointer", "promote"),
    ):
        assert trials[target].stage == stage, f"{target} landed in {trials[target].stage}"


def test_the_next_pass_after_every_kill_exits_0(trials: dict[str, TrialResult]) -> None:
    codes = {key: r.next_exit for key, r in trials.items()}
    assert set(codes.values()) == {0}, codes


def test_a_kill_after_scoring_keeps_the_better_candidate_on_its_way_to_production(
    trials: dict[str, TrialResult],
) -> None:
    """Regression (fixed in 237f238): killed once the candidate's F1 was in its card, the next
    pass said "no new data" and the better candidate never reached production."""
    result = trials["score-candidate"]
    assert result.killed and result.stage in ("score", "promote"), result.stage
    assert not result.failures, [str(f) for f in result.failures]
    if result.stage == "score":  # before the pointer moved: the next pass promotes the candidate
        assert result.next_outcome == "promoted", result.next_outcome


def test_a_kill_during_promotion_leaves_log_history_and_report_in_step_with_production(
    trials: dict[str, TrialResult],
) -> None:
    """Regression (fixed in 237f238): killed after the pointer moved, promotions.jsonl (between
    the pointer write and the log append), beryl.sqlite's promotions and report.html stayed
    behind production for good, and `beryl models rollback` refused to run."""
    for target in ("promote-log", "promote-pointer", "report"):
        result = trials[target]
        assert result.killed, f"{target} was never killed"
        assert not result.failures, [str(f) for f in result.failures]


def test_the_checks_name_every_kind_of_damage(harness: Harness, tmp_path: Path) -> None:
    """The harness must be able to fail: damage of each kind breaks the invariant it names."""
    root = tmp_path / "ws"
    shutil.copytree(harness.base, root, symlinks=True)
    settings = config.load(root / "config.json")
    assert check_before_repair(settings) == []
    assert check_after_pass(settings, 0, "no-new-data") == []

    data = settings.output_folder
    manifest = json.loads((data / "dataset.json").read_text())
    batch = manifest["batches"][0]
    for suffix in (".parquet", ".hashes.npy"):  # the same rows again, as a second batch ...
        shutil.copyfile(
            data / "batches" / f"{batch['id']}{suffix}", data / "batches" / f"b{suffix}"
        )
        shutil.copyfile(
            data / "batches" / f"{batch['id']}{suffix}", data / "batches" / f"o{suffix}"
        )
    manifest["batches"].append({**batch, "id": "b"})  # ... while o.parquet is named by nothing
    (data / "dataset.json").write_text(json.dumps(manifest))
    model = settings.model_folder / "versions" / "v0001" / "model.pkl"
    model.write_bytes(model.read_bytes() + b"\0")
    (settings.model_folder / ".beryl-tmp-left").write_text("")
    (settings.model_folder / "latestscore.txt").write_text("0.8")
    (settings.model_folder / "report.html").write_text("<html><body>cut")

    before = {f.invariant for f in check_before_repair(settings)}
    assert before == {"readable", "production", "dataset"}, before
    after = {f.invariant for f in check_after_pass(settings, 10, "kept")}
    expected = {"exit-code", "readable", "production", "leftovers", "dataset", "finaldata"}
    assert after >= expected | {"orphans", "rows"}, after


def test_the_checks_catch_a_half_written_file(tmp_path: Path) -> None:
    """The harness must be able to fail: a truncated dataset.json is reported by name."""
    ws = init_workspace(tmp_path / "ws", rows=40, files=1)
    settings = config.load(ws.config)
    manifest = settings.output_folder / "dataset.json"
    manifest.write_text('{"format": 1, "batches": [')
    (settings.output_folder / ".beryl-tmp-abc").write_text("half")  # temporary: not checked
    problems = check_readable(settings.root)
    assert len(problems) == 1 and problems[0].startswith("ingesteddata/dataset.json: "), problems
