"""Kill `beryl run` with SIGKILL at random moments and check that nothing a reader sees breaks.

    .venv/bin/python scripts/crash_trials.py --trials 200 [--seed S] [--workdir DIR] [--jobs J]

Prints one row per trial (kill, delay, stage hit, invariants before repair, the next pass's exit
code and outcome, invariants after it) and a summary line; exits 1 when any invariant broke.
The trials are the crash harness's (tests/crash_harness.py), run by pytest: this runs
``tests/test_crash.py::test_crash_trials`` alone with its options in ``BERYL_CRASH_*``
variables (the CI run of that test is the short version) and passes on pytest's exit code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "test_crash_trials"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="number of trials (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the trial plans")
    parser.add_argument("--workdir", type=Path, default=None, help="where trials run (temp dir)")
    parser.add_argument("--jobs", type=int, default=1, help="trials run at once (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep every trial's workspace")
    args = parser.parse_args(argv)

    workdir = (
        args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="beryl-crash-"))
    )
    print(f"workdir: {workdir}", flush=True)
    env = os.environ | {
        "BERYL_CRASH_TRIALS": str(args.trials),
        "BERYL_CRASH_SEED": str(args.seed),
        "BERYL_CRASH_JOBS": str(args.jobs),
        "BERYL_CRASH_WORKDIR": str(workdir),
        "BERYL_CRASH_KEEP": "1" if args.keep else "",
    }
    # -s: the test's rows and summary as they come; -q, --tb=short: little of pytest's own.
    pytest = [sys.executable, "-m", "pytest", "tests/test_crash.py", "-k", TEST, "-s", "-q"]
    pytest += ["--tb=short", "-p", "no:cacheprovider"]
    code = subprocess.run(pytest, cwd=ROOT, env=env, check=False).returncode
    if code == 0 and args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
