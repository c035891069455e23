"""Kill `beryl run` with SIGKILL at random moments and check that nothing a reader sees breaks.

    .venv/bin/python scripts/crash_trials.py --trials 200 [--seed S] [--workdir DIR] [--jobs J]

Prints one row per trial (kill, delay, stage hit, invariants before repair, the next pass's exit
code and outcome, invariants after it) and a summary line; exits 1 when any invariant broke.
The harness itself lives in tests/crash_harness.py (the CI test runs a short version of it).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.crash_harness import (  # noqa: E402  (after the path insert)
    HEADER,
    KEY_STAGES,
    Harness,
    TrialResult,
    default_workdir,
    format_row,
    stage_counts,
    summary,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="number of trials (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the trial plans")
    parser.add_argument("--workdir", type=Path, default=None, help="where trials run (temp dir)")
    parser.add_argument("--jobs", type=int, default=1, help="trials run at once (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep every trial's workspace")
    args = parser.parse_args(argv)

    workdir = args.workdir.resolve() if args.workdir else default_workdir()
    print(f"workdir: {workdir}", flush=True)
    began = time.monotonic()
    harness = Harness(workdir, seed=args.seed, keep=args.keep, log=print)
    harness.prepare()
    print(HEADER, flush=True)

    def show(result: TrialResult) -> None:
        print(format_row(result), flush=True)

    results = harness.run(
        [harness.plan(i) for i in range(args.trials)], jobs=args.jobs, on_result=show
    )
    print(f"\n{time.monotonic() - began:.0f}s; {summary(results)}")
    notes = Counter(note for r in results for note in r.notes)
    for note, count in notes.most_common():
        print(f"note ({count} trial(s)): {note}")
    missed = [s for s in KEY_STAGES if not stage_counts(results)[s]]
    if missed:
        print(f"no kill landed in: {', '.join(missed)} (run more trials)")
    failed = [r for r in results if not r.ok]
    if failed:
        print("failed trials kept in: " + ", ".join(str(r.workspace.parent) for r in failed))
        return 1
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
