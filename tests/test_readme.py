"""The README's promises each name tests that exist: a promise whose test is gone is a claim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_REFERENCE = re.compile(r"`((?:tests/[\w/]+\.py)?)(?:::(\w+))?(?:\[[^`\]]*\])?`")


def promise_rows() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## What Beryl promises", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| **")]


def test_every_promise_names_tests_that_exist() -> None:
    rows = promise_rows()
    assert len(rows) >= 20
    missing = []
    for row in rows:
        checked_by = row.rsplit("|", 2)[-2]
        current: Path | None = None
        names = 0
        for path, name in _REFERENCE.findall(checked_by):
            if path:
                current = ROOT / path
                if not current.is_file():
                    missing.append(path)
                    continue
                names += 1
            if name:
                assert current is not None, f"{name} names no file: {row[:60]}"
                source = current.read_text(encoding="utf-8")
                if not re.search(rf"^(async )?def {name}\b", source, re.MULTILINE):
                    missing.append(f"{current.relative_to(ROOT)}::{name}")
        assert names, f"a promise names no test: {row[:80]}"
    assert missing == []


def exit_code_table() -> dict[int, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    return {
        int(match.group(1)): match.group(2)
        for match in re.finditer(r"^\| (\d+) \| (.+) \|$", section, re.MULTILINE)
    }


def test_the_exit_code_table_is_every_code_beryl_exits_with() -> None:
    """Every error class's code, the pass outcomes and Ctrl-C are in the table, and the table
    lists no code that nothing produces."""
    import beryl.errors as errors

    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    import beryl.cli  # noqa: F401  (every module that defines an error class is imported)

    produced = {cls.exit_code for cls in subclasses(errors.BerylError)}
    produced |= {errors.EXIT_OK, errors.EXIT_PARTIAL, errors.EXIT_PROMOTED_WITH_ERRORS, 130}
    table = exit_code_table()
    assert set(table) == produced, (sorted(table), sorted(produced))
    literal = re.compile(r"sys\.exit\((\d+)\)")
    for path in (ROOT / "src" / "beryl").rglob("*.py"):
        for code in literal.findall(path.read_text(encoding="utf-8")):
            assert int(code) in table, f"{path.name} exits {code}, which the README does not list"
