"""Layers point one way (docs/architecture.md): entry points (CLI, API) → the loop → stages and
stores (data, model, monitoring) → the foundation (config, errors, _io, the seams).

Checked two ways: every import in the source, at module level or inside a function (only
``TYPE_CHECKING`` imports, which never run, are exempt), and the modules a real run of the
core has loaded when it is done.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "beryl"
WEB = (
    *("fastapi", "fastapi_offline", "starlette", "uvicorn", "prometheus_client", "httptools"),
    "uvloop",
)
CLI = ("click", "rich")
# What the core may find loaded at run time without importing it: scikit-learn imports rich
# (its progress display) whenever rich is installed.
LOADED_BY_PEERS = ("rich",)
FOUNDATION = (
    *("beryl._io", "beryl.errors", "beryl.config", "beryl.sections", "beryl.original"),
    "beryl.recovery",
    *("beryl.storage", "beryl.lock", "beryl.objectstore", "beryl.postgres"),
)
# What each part may import from Beryl: nothing above it.
ALLOWED: dict[str, tuple[str, ...]] = {
    "foundation": FOUNDATION,
    "beryl.workspace": (
        *FOUNDATION,
        "beryl.workspace",
        "beryl.data",
        "beryl.model",
        "beryl.monitoring",
        "beryl.spark",
    ),
    "beryl.data": (*FOUNDATION, "beryl.workspace", "beryl.data"),
    # The Spark engine: Beryl's own reading and training rules, run by Spark.
    "beryl.spark": (*FOUNDATION, "beryl.workspace", "beryl.data", "beryl.model", "beryl.spark"),
    "beryl.model": (*FOUNDATION, "beryl.workspace", "beryl.data", "beryl.model"),
    "beryl.monitoring": (
        *FOUNDATION,
        "beryl.workspace",
        "beryl.data",
        "beryl.model",
        "beryl.monitoring",
    ),
    "beryl.loop": (
        *FOUNDATION,
        "beryl.workspace",
        "beryl.data",
        "beryl.model",
        "beryl.monitoring",
        "beryl.loop",
    ),
}


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str | None:
    if module in FOUNDATION:
        return "foundation"
    for part in ALLOWED:
        if module == part or module.startswith(part + "."):
            return part
    return None  # an entry point: beryl (the package), beryl.cli, beryl.api, beryl.__main__


class _Imports(ast.NodeVisitor):
    """Every module an import statement names, except inside ``if TYPE_CHECKING:``."""

    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(node.lineno, alias.name) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            self.found += [(node.lineno, node.module), *((node.lineno, n) for n in names)]


def _imports(path: Path) -> list[tuple[int, str]]:
    visitor = _Imports()
    visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
    return visitor.found


def _is(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_every_import_points_down() -> None:
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module(path)
        part = _part(module)
        if part is None:
            continue
        for line, imported in _imports(path):
            if _is(imported, WEB + CLI) or _is(imported, ("beryl.api", "beryl.cli")):
                wrong.append(f"{module}:{line} imports {imported} (an entry point's library)")
            elif _part(imported) is not None and not _is(imported, ALLOWED[part]):
                wrong.append(f"{module}:{line} imports {imported}, above {part}")
    assert wrong == []


def test_the_check_sees_imports_inside_functions() -> None:
    """The static check is only worth something if it catches the run-time imports too."""
    source = textwrap.dedent(
        """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            import fastapi
        def later():
            from beryl.api.client import call_all
            import click
        """
    )
    visitor = _Imports()
    visitor.visit(ast.parse(source))
    names = {name for _, name in visitor.found}
    assert {"beryl.api.client", "click"} <= names and "fastapi" not in names


@pytest.mark.slow
def test_a_whole_run_of_the_core_loads_no_web_or_cli_library(tmp_path: Path) -> None:
    """A pass with promotion and report, diagnostics and a scored file, in a fresh process:
    nothing of the API, the CLI or their libraries is loaded at any point."""
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from beryl import config
        from beryl.data.demo import add_batch, init_workspace
        from beryl.loop.passes import run_pass
        from beryl.model.predictfile import score_file
        from beryl.monitoring.diagnostics import diagnose
        from beryl.workspace import Workspace

        ws = init_workspace(Path({str(tmp_path / "ws")!r}), rows=400, files=2, seed=1)
        workspace = Workspace(config.load(ws.config))
        run_pass(workspace)
        add_batch(workspace.settings.input_folder, "more.csv", rows=300, seed=2, shift=0.5)
        run_pass(workspace)
        diagnose(workspace.settings, check_outdated=False)
        score_file(workspace.settings, ws.test_file, Path({str(tmp_path / "scored.csv")!r}))
        loaded = sorted(
            m for m in sys.modules
            if m.split(".")[0] in {tuple(set(WEB + CLI) - set(LOADED_BY_PEERS))!r}
            or m.startswith(("beryl.api", "beryl.cli"))
        )
        print(loaded)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
