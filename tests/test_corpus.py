"""A corpus of CSV trouble: one table of cases, each ingested beside a good file.

Every case runs on the demo workspace after its three source files went in (so the schema and
the classes {0, 1} are known), with one more good file in the same pass, and states its outcome:

- ``ingested``: the rows it adds, aligned by column name (NaN for missing, text trimmed, ids
  kept as written);
- ``quarantined``: parts of the reason, which names the file and the problem (column and row
  where there is one); it is not recorded again while unchanged and goes in once fixed;
- ``duplicate-file``: same content as an ingested file, adds nothing;
- ``deferred``: still being written during the pass, not recorded, read by the next pass;
- ``ignored``: not a ``*.csv`` entry, never read nor recorded.

Whatever happens, the good file goes in, nothing in the input folder is deleted or modified,
and the dataset and finaldata.csv hold exactly the good rows.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.conftest import CliRunner

from beryl.config import Settings
from beryl.data.dataset import Dataset
from beryl.data.ingestion import IngestionResult, ingest
from beryl.data.manifest import FileRecord
from beryl.errors import EXIT_PARTIAL

HEADER = "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"
COLUMNS = HEADER.strip().split(",")
NUMERIC = COLUMNS[1:4]
NAN = float("nan")
Row = tuple[Any, ...]
GOOD_NAME = "good_new.csv"
GOOD_ROWS: tuple[Row, ...] = (("good-1", 11, 12, 13, 0), ("good-2", 21, 22, 23, 1))
FIXED = HEADER + "fixed,1,2,3,0\n"
LONG_ID = "L" * 2_000_000  # one value longer than pyarrow's 1 MiB parse block

Make = Callable[[Path, Path], None]  # (the entry to create in the input folder, a folder outside)
Hook = Callable[[Path], None]


def csv_text(*lines: str, header: str = HEADER) -> str:
    return header + "".join(line + "\n" for line in lines)


@dataclass(frozen=True)
class Case:
    """One kind of trouble and what one ingestion pass must do with it."""

    make: Make
    status: str  # ingested | quarantined | duplicate-file | deferred | ignored
    rows: tuple[Row, ...] = ()  # ingested/deferred: exactly the rows the file adds
    reason: tuple[str, ...] = ()  # parts of the reason; {name} is the file's name
    name: str = "bad.csv"
    keep_name: bool = False  # the name is part of the trouble (kept in the all-at-once test)
    rows_read: int | None = None
    note: str | None = None
    during: Hook | None = None  # what a writer does to the file while the pass runs
    after: Hook | None = None  # what the writer does once it is done
    fix: str = FIXED  # the content a user saves to fix a quarantined file


def content(data: str | bytes) -> Make:
    raw = data.encode("utf-8") if isinstance(data, str) else data

    def make(path: Path, outside: Path) -> None:
        path.write_bytes(raw)

    return make


def _make(source: Make | str | bytes) -> Make:
    return content(source) if isinstance(source, str | bytes) else source


def quarantined(source: Make | str | bytes, *reason: str, **options: Any) -> Case:
    return Case(_make(source), "quarantined", reason=reason, **options)


def ingested(source: Make | str | bytes, *rows: Row, **options: Any) -> Case:
    return Case(_make(source), "ingested", rows=rows, **options)


def ignored(name: str, data: str) -> Case:
    return Case(content(data), "ignored", name=name, keep_name=True)


# --- entries that are not plain CSV text ------------------------------------------------------


def directory(path: Path, outside: Path) -> None:
    path.mkdir()
    (path / "inner.csv").write_text(csv_text("inner,1,2,3,0"))


def fifo(path: Path, outside: Path) -> None:
    os.mkfifo(path)


def link_outside(path: Path, outside: Path) -> None:
    target = outside / "elsewhere.csv"
    target.write_text(csv_text("leak,1,2,3,0"))
    path.symlink_to(target)


def dangling_link(path: Path, outside: Path) -> None:
    # what Emacs leaves beside a file being edited: a link to "user@host.pid:boot"
    path.symlink_to("user@host.4242:1700000000")


# --- files that change -------------------------------------------------------------------------


def append_two_rows(path: Path, outside: Path) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("new-a,1,2,3,0\nnew-b,4,5,6,1\n")


def keep_three_rows(path: Path, outside: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:4]), encoding="utf-8")


def overlapping_rows(path: Path, outside: Path) -> None:
    known = (path.parent / "dataset1.csv").read_text(encoding="utf-8").splitlines()[1]
    path.write_text(csv_text(known, "overlap-new,1,2,3,0"), encoding="utf-8")


def renamed_copy(path: Path, outside: Path) -> None:
    shutil.copyfile(path.parent / "dataset1.csv", path)


def bad_twins(path: Path, outside: Path) -> None:
    data = csv_text("twin,1,oops,3,0")
    (path.parent / "a_twin.csv").write_text(data, encoding="utf-8")
    path.write_text(data, encoding="utf-8")


def grow(path: Path) -> None:
    with path.open("ab") as handle:
        handle.write(b"grow-2,4,5,6,1\n")


VANISHING = csv_text("vanish-1,1,2,3,0")


def vanish(path: Path) -> None:
    path.unlink()  # e.g. a sync tool moving the file aside for a moment


def come_back(path: Path) -> None:
    path.write_text(VANISHING, encoding="utf-8")


def bug(reason: str, raises: type[BaseException] = AssertionError) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=raises, reason=reason)


CASES = [
    # --- nothing usable ----------------------------------------------------------------------
    pytest.param(quarantined("", "{name}: the file is empty"), id="empty-file"),
    pytest.param(quarantined(" \n\t\n  \n", "{name}: the file is empty"), id="only-whitespace"),
    pytest.param(quarantined(HEADER, "{name}: has a header but no data rows"), id="header-only"),
    pytest.param(
        quarantined(HEADER + "\n\n", "{name}: has a header but no data rows"),
        id="header-and-blank-lines",
    ),
    pytest.param(
        quarantined(
            "aaa,1,2,3,0\nbbb,4,5,6,1\n",
            "{name}: missing column(s) corporation, lastmonth_activity",
            "found aaa, 1, 2, 3, 0",
        ),
        id="no-header",
    ),
    # --- delimiters --------------------------------------------------------------------------
    pytest.param(
        quarantined(
            HEADER.replace(",", ";") + "semi;1;2;3;0\n",
            "{name}: missing column(s) corporation",
            "found corporation;lastmonth_activity;",
        ),
        id="semicolon-delimited",
    ),
    pytest.param(
        quarantined(
            HEADER.replace(",", "\t") + "tab\t1\t2\t3\t0\n",
            "{name}: missing column(s) corporation",
            "found corporation\tlastmonth_activity\t",
        ),
        id="tab-delimited",
    ),
    pytest.param(
        quarantined(
            HEADER.replace(",", ";") + "dc;1,5;2;3;0\n",
            "{name}: not a readable CSV file",
            "Expected 1 columns, got 2: dc;1,5;2;3;0",
        ),
        id="semicolons-with-decimal-commas",
    ),
    pytest.param(
        quarantined(
            "sep=,\n" + csv_text("sep,1,2,3,0"),
            "{name}: not a readable CSV file",
            "Expected 2 columns, got 5",
        ),
        id="excel-sep-line",
    ),
    # --- columns -----------------------------------------------------------------------------
    pytest.param(
        quarantined(
            "corporation,lastmonth_activity,lastyear_activity,number_of_employees\nx,1,2,3\n",
            "{name}: missing column(s) exited;",
        ),
        id="missing-target-column",
    ),
    pytest.param(
        quarantined(
            "corporation,lastmonth_activity,number_of_employees,exited\nx,1,3,0\n",
            "{name}: missing column(s) lastyear_activity;",
        ),
        id="missing-feature-column",
    ),
    pytest.param(
        quarantined(
            "lastmonth_activity,lastyear_activity,number_of_employees,exited\n1,2,3,0\n",
            "{name}: missing column(s) corporation;",
        ),
        id="missing-id-column",
    ),
    pytest.param(
        quarantined(
            "Corporation,lastmonth_activity,lastyear_activity,number_of_employees,Exited\n"
            "case,1,2,3,0\n",
            "{name}: missing column(s) corporation, exited;",
        ),
        id="header-in-other-case",
    ),
    pytest.param(
        ingested(
            "corporation,lastmonth_activity,extra,lastyear_activity,number_of_employees,"
            "exited,note\nxtra,1,x,2,3,0,hello\n",
            ("xtra", 1, 2, 3, 0),
        ),
        id="extra-columns",
    ),
    pytest.param(
        ingested(
            "exited,number_of_employees,corporation,lastyear_activity,lastmonth_activity\n"
            "1,30,order,20,10\n0,3,order2,,1\n",
            ("order", 10, 20, 30, 1),
            ("order2", 1, NAN, 3, 0),
        ),
        id="columns-in-another-order",
    ),
    pytest.param(
        quarantined(
            "corporation,lastmonth_activity,lastmonth_activity,lastyear_activity,"
            "number_of_employees,exited\ndup,1,1,2,3,0\n",
            "{name}: column name(s) lastmonth_activity appear more than once",
        ),
        id="duplicated-column-names",
    ),
    pytest.param(
        quarantined(
            "corporation,lastmonth_activity, lastmonth_activity ,lastyear_activity,"
            "number_of_employees,exited\ndup,1,1,2,3,0\n",
            "{name}: column name(s) lastmonth_activity appear more than once",
        ),
        id="duplicated-column-names-after-trimming",
    ),
    pytest.param(
        ingested(
            " corporation , lastmonth_activity ,lastyear_activity,\tnumber_of_employees , exited\n"
            "  padded  , 4 , 5,6 , 1 \n",
            ("padded", 4, 5, 6, 1),
        ),
        id="spaces-around-names-and-values",
    ),
    pytest.param(
        ingested(
            csv_text("trail,1,2,3,0,", "trail2,4,,6,1,", header=HEADER.rstrip("\n") + ",\n"),
            ("trail", 1, 2, 3, 0),
            ("trail2", 4, NAN, 6, 1),
        ),
        id="trailing-comma-empty-column",
    ),
    pytest.param(
        quarantined(
            csv_text("trail,1,2,3,0,"),
            "{name}: not a readable CSV file",
            "Expected 5 columns, got 6: trail,1,2,3,0,",
        ),
        id="trailing-comma-on-rows-only",
    ),
    pytest.param(
        quarantined(
            csv_text("first,1,2,3,0") + csv_text("second,4,5,6,1"),
            "{name}: column 'lastmonth_activity'",
            "('lastmonth_activity')",
            "at row 2",
        ),
        id="header-repeated-mid-file",
    ),
    # --- values ------------------------------------------------------------------------------
    pytest.param(
        quarantined(
            csv_text("ok,1,2,3,0", "text,4,lots,6,1"),
            "{name}: column 'lastyear_activity' was inferred as numeric from the first ingested "
            "file dataset1.csv; this file has text in it ('lots') at row 2",
            "fix those values or leave them blank for missing",
            "list it in categorical_features in config.json and re-type the stored data with "
            "`beryl dataset retype lastyear_activity --as categorical`",
        ),
        id="text-in-numeric-column",
    ),
    pytest.param(
        quarantined(
            csv_text('thousands,"1,000",2,3,0'),
            "{name}: column 'lastmonth_activity'",
            "('1,000')",
            "at row 1",
        ),
        id="thousands-separator",
    ),
    pytest.param(
        quarantined(
            csv_text("flag,true,2,3,0", "flag2,false,2,3,1"),
            "{name}: column 'lastmonth_activity' holds true/false values",
        ),
        id="true-false-in-numeric-column",
    ),
    pytest.param(
        ingested(
            csv_text(
                "na-1,NA,2,3,0",
                "na-2,null,N/A,NaN,1",
                "na-3,,nan,NULL,0",
                "na-4,n/a,#N/A,  ,1",
            ),
            ("na-1", NAN, 2, 3, 0),
            ("na-2", NAN, NAN, NAN, 1),
            ("na-3", NAN, NAN, NAN, 0),
            ("na-4", NAN, NAN, NAN, 1),
        ),
        id="missing-value-spellings",
    ),
    pytest.param(
        quarantined(
            csv_text("fin,1,2,3,0", "inf,inf,2,3,1"),
            "{name}: column 'lastmonth_activity' has infinite values at row 2",
        ),
        id="inf",
    ),
    pytest.param(
        quarantined(
            csv_text("ninf,1,-Infinity,3,0"),
            "{name}: column 'lastyear_activity' has infinite values at row 1",
        ),
        id="minus-infinity",
    ),
    pytest.param(
        quarantined(
            csv_text("huge,1,2,1e400,0"),
            "{name}: column 'number_of_employees' has infinite values at row 1",
        ),
        id="number-overflowing-to-inf",
    ),
    pytest.param(
        ingested(csv_text('"quoted","12","2.5","3","0"'), ("quoted", 12, 2.5, 3, 0)),
        id="quoted-numbers",
    ),
    pytest.param(
        ingested(csv_text("neg,-5,-2.5,3,0"), ("neg", -5, -2.5, 3, 0)),
        id="negative-numbers",
    ),
    pytest.param(
        ingested(csv_text("sci,1e3,2.5E-1,1E2,1"), ("sci", 1000, 0.25, 100, 1)),
        id="scientific-notation",
    ),
    pytest.param(
        ingested(
            csv_text("007,1,2,3,0", "  padded id  ,4,5,6,1", "1e3,7,8,9,0", "0123,1,2,3,1"),
            ("007", 1, 2, 3, 0),
            ("padded id", 4, 5, 6, 1),
            ("1e3", 7, 8, 9, 0),
            ("0123", 1, 2, 3, 1),
        ),
        id="ids-kept-as-text",
    ),
    pytest.param(
        ingested(
            csv_text(",1,2,3,0", "   ,4,5,6,1"),
            (NAN, 1, 2, 3, 0),
            (NAN, 4, 5, 6, 1),
        ),
        id="missing-id-values",
    ),
    pytest.param(
        ingested(
            csv_text("twice,1,2,3,0", "twice,1,2,3,0", "once,4,5,6,1"),
            ("twice", 1, 2, 3, 0),
            ("once", 4, 5, 6, 1),
            rows_read=3,
        ),
        id="duplicate-rows-inside-the-file",
    ),
    pytest.param(
        ingested(overlapping_rows, ("overlap-new", 1, 2, 3, 0), rows_read=2),
        id="rows-already-in-the-dataset",
    ),
    # --- labels ------------------------------------------------------------------------------
    pytest.param(
        quarantined(
            csv_text("l0,1,2,3,0", "l2,1,2,3,2"),
            "{name}: label value(s) 2 are not among the known classes 0, 1",
        ),
        id="label-outside-known-classes",
    ),
    pytest.param(
        quarantined(
            csv_text("yes,1,2,3,yes"),
            "{name}: label column 'exited' has non-integer values ('yes') at row 1",
        ),
        id="label-yes-with-integer-positive-label",
    ),
    pytest.param(
        quarantined(
            csv_text("half,1,2,3,0", "half2,1,2,3,0.5"),
            "{name}: label column 'exited' has non-integer values ('0.5') at row 2",
        ),
        id="label-fractional",
    ),
    pytest.param(
        quarantined(
            csv_text("bool,1,2,3,true"),
            "{name}: label column 'exited' has non-integer values ('true') at row 1",
        ),
        id="label-true",
    ),
    pytest.param(
        quarantined(
            csv_text("b1,1,2,3,0", "b2,1,2,3,", "b3,1,2,3,  "),
            "{name}: label column 'exited' is blank at rows 2, 3",
        ),
        id="label-blank",
    ),
    pytest.param(
        quarantined(csv_text("na,1,2,3,NA"), "{name}: label column 'exited' is blank at row 1"),
        id="label-NA",
    ),
    pytest.param(
        ingested(csv_text("f1,1,2,3,1.0", "f0,4,5,6,0.0"), ("f1", 1, 2, 3, 1), ("f0", 4, 5, 6, 0)),
        id="label-integral-float",
    ),
    pytest.param(
        ingested(csv_text("pl,1,2,3, 1 "), ("pl", 1, 2, 3, 1)),
        id="label-padded",
    ),
    pytest.param(
        quarantined(csv_text("big,1,2,3,1e30"), "{name}: label", "'1e30'", "row 1"),
        id="label-too-big-for-an-integer",
    ),
    # --- row structure -----------------------------------------------------------------------
    pytest.param(
        quarantined(
            csv_text("ok,1,2,3,0", "short,1,2"),
            "{name}: not a readable CSV file",
            "Expected 5 columns, got 3: short,1,2",
        ),
        id="ragged-short-row",
    ),
    pytest.param(
        quarantined(
            csv_text("long,1,2,3,0,9"),
            "{name}: not a readable CSV file",
            "Expected 5 columns, got 6: long,1,2,3,0,9",
        ),
        id="ragged-long-row",
    ),
    pytest.param(
        quarantined(
            csv_text('"open,1,2,3,0', "next,4,5,6,1"),
            "{name}: not a readable CSV file",
            '"open,1,2,3,0',
        ),
        id="unterminated-quote",
    ),
    pytest.param(
        quarantined(
            HEADER + "half-1,1,2,3,0\nhalf-2,4,",
            "{name}: not a readable CSV file",
            "Expected 5 columns, got 3: half-2,4,",
            fix=csv_text("half-1,1,2,3,0", "half-2,4,5,6,1"),
        ),
        id="half-written-last-row",
    ),
    pytest.param(
        ingested(
            csv_text('"multi\nline, inc",1,2,3,0', '"quote ""q""",4,5,6,1'),
            ("multi\nline, inc", 1, 2, 3, 0),
            ('quote "q"', 4, 5, 6, 1),
        ),
        id="quoted-newlines-and-quotes",
    ),
    pytest.param(
        ingested(
            HEADER + "\nblank-1,1,2,3,0\n\n\nblank-2,4,5,6,1\n\n",
            ("blank-1", 1, 2, 3, 0),
            ("blank-2", 4, 5, 6, 1),
        ),
        id="blank-lines-between-rows",
    ),
    pytest.param(
        ingested(HEADER + "nonl,1,2,3,0", ("nonl", 1, 2, 3, 0)),
        id="no-final-newline",
    ),
    pytest.param(
        ingested(
            csv_text(f"{LONG_ID},1,2,3,0", "after-long,4,5,6,1"),
            (LONG_ID, 1, 2, 3, 0),
            ("after-long", 4, 5, 6, 1),
        ),
        id="very-long-line",
    ),
    # --- encodings and bytes -----------------------------------------------------------------
    pytest.param(
        ingested(b"\xef\xbb\xbf" + csv_text("bom,1,2,3,0").encode(), ("bom", 1, 2, 3, 0)),
        id="utf8-bom",
    ),
    pytest.param(
        ingested(
            csv_text("crlf-1,1,2,3,0", "crlf-2,4,,6,1").replace("\n", "\r\n"),
            ("crlf-1", 1, 2, 3, 0),
            ("crlf-2", 4, NAN, 6, 1),
        ),
        id="crlf-line-ends",
    ),
    pytest.param(
        ingested(
            csv_text("cr-1,1,2,3,0", "cr-2,4,5,6,1").replace("\n", "\r"),
            ("cr-1", 1, 2, 3, 0),
            ("cr-2", 4, 5, 6, 1),
        ),
        id="cr-only-line-ends",
    ),
    pytest.param(
        ingested(
            b"\xef\xbb\xbf" + csv_text("excel,1,2,3,0").replace("\n", "\r\n").encode(),
            ("excel", 1, 2, 3, 0),
        ),
        id="excel-csv-utf8-bom-and-crlf",
    ),
    pytest.param(
        ingested(
            csv_text("café,1,2,3,0", "Zürich AG,4,5,6,1").encode("latin-1"),
            ("café", 1, 2, 3, 0),
            ("Zürich AG", 4, 5, 6, 1),
            note="read as Latin-1",
        ),
        id="latin-1-bytes",
    ),
    pytest.param(
        # Judgment call: refused with a reason (save it again as UTF-8), not guessed at.
        quarantined(csv_text("utf16,1,2,3,0").encode("utf-16"), "{name}: ", "NUL bytes"),
        id="utf-16",
    ),
    pytest.param(
        quarantined(bytes(range(256)) * 8, "{name}: is a binary file", "NUL bytes"),
        id="binary-garbage",
    ),
    pytest.param(
        quarantined(bytes(range(1, 256)) * 8, "{name}: not a readable CSV file"),
        id="binary-garbage-without-nul",
    ),
    pytest.param(
        quarantined(
            gzip.compress(csv_text("zip,1,2,3,0").encode(), mtime=0),
            "{name}: is a binary file",
        ),
        id="gzip-named-csv",
    ),
    # --- entries of the input folder ---------------------------------------------------------
    pytest.param(
        quarantined(directory, "{name} is not a regular file", name="x.csv"),
        id="directory-named-csv",
    ),
    pytest.param(
        quarantined(fifo, "{name} is not a regular file", name="x.csv"),
        id="fifo-named-csv",
    ),
    pytest.param(
        quarantined(
            link_outside,
            "{name} is a symbolic link",
            "only regular files inside the input folder",
            name="x.csv",
        ),
        id="link-pointing-outside",
    ),
    pytest.param(
        # Judgment call: an editor's lock link is refused like any link, not silently skipped.
        quarantined(dangling_link, "{name} is a symbolic link", name=".#x.csv", keep_name=True),
        id="dangling-link-emacs-lock",
    ),
    pytest.param(
        ingested(csv_text("upper,1,2,3,0"), ("upper", 1, 2, 3, 0), name="UPPER.CSV"),
        id="uppercase-extension",
    ),
    pytest.param(ignored("notes.txt", csv_text("txt,1,2,3,0")), id="not-a-csv-file"),
    pytest.param(
        ignored(".~lock.x.csv#", ",user,host,01.01.2025 10:00,file:///home/user;"),
        id="libreoffice-lock-file",
    ),
    pytest.param(
        ignored("export.csv.crdownload", csv_text("partial,1,2,3,0")),
        id="download-in-progress",
    ),
    # --- files that change -------------------------------------------------------------------
    pytest.param(
        Case(
            content(csv_text("grow-1,1,2,3,0")),
            "deferred",
            rows=(("grow-1", 1, 2, 3, 0), ("grow-2", 4, 5, 6, 1)),
            during=grow,
        ),
        id="still-being-written",
    ),
    pytest.param(
        Case(
            content(VANISHING),
            "deferred",
            rows=(("vanish-1", 1, 2, 3, 0),),
            during=vanish,
            after=come_back,
        ),
        id="gone-for-a-moment-during-the-pass",
    ),
    pytest.param(
        ingested(
            append_two_rows,
            ("new-a", 1, 2, 3, 0),
            ("new-b", 4, 5, 6, 1),
            name="dataset1.csv",
            keep_name=True,
        ),
        id="replaced-with-new-content",
    ),
    pytest.param(
        ingested(keep_three_rows, rows_read=3, name="dataset1.csv", keep_name=True),
        id="replaced-with-fewer-rows",
    ),
    pytest.param(
        quarantined(
            csv_text("broken,1,2,3,0", "broken2,x,2,3,1"),
            "dataset1.csv: column 'lastmonth_activity'",
            "at row 2",
            name="dataset1.csv",
            keep_name=True,
        ),
        id="ingested-file-replaced-by-a-broken-one",
    ),
    pytest.param(
        Case(
            renamed_copy,
            "duplicate-file",
            reason=("same content as dataset1.csv", "already ingested"),
            name="copy_of_dataset1.csv",
        ),
        id="renamed-copy",
    ),
    pytest.param(
        quarantined(bad_twins, "{name}: column 'lastyear_activity'", "('oops')", "at row 1"),
        id="copy-of-a-bad-file-in-the-same-pass",
    ),
]


# --- helpers -----------------------------------------------------------------------------------


def by_name(result: IngestionResult) -> dict[str, FileRecord]:
    return {r.name: r for r in result.records}


def ingested_names(settings: Settings) -> list[str]:
    return (settings.output_folder / "ingestedfiles.txt").read_text(encoding="utf-8").splitlines()


def put_good(folder: Path, name: str = GOOD_NAME, rows: tuple[Row, ...] = GOOD_ROWS) -> None:
    lines = [",".join(str(v) for v in row) for row in rows]
    (folder / name).write_text(csv_text(*lines), encoding="utf-8")


def entry(path: Path) -> tuple[Any, ...]:
    """What is at ``path``, without following links or opening anything but regular files."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return ("absent",)
    if stat.S_ISLNK(info.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return ("dir", {p.name: entry(p) for p in path.iterdir()})
    if stat.S_ISREG(info.st_mode):
        return ("file", path.read_bytes(), info.st_mtime_ns)
    return ("special", stat.S_IFMT(info.st_mode), info.st_mtime_ns)


def entries(*folders: Path) -> dict[str, tuple[Any, ...]]:
    return {str(p): entry(p) for folder in folders for p in folder.iterdir()}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def table_rows(frame: pd.DataFrame) -> list[Row]:
    return [tuple(_plain(v) for v in row) for row in frame[COLUMNS].itertuples(index=False)]


def _key(row: Row) -> tuple[str, ...]:
    return tuple(
        "" if v is None else f"{float(v):.17g}" if isinstance(v, int | float) else str(v)
        for v in row
    )


def same_rows(actual: list[Row], expected: list[Row]) -> bool:
    want = [tuple(_plain(v) for v in row) for row in expected]
    return sorted(actual, key=_key) == sorted(want, key=_key)


def check_dataset(
    settings: Settings, result: IngestionResult, total: int, added: list[Row]
) -> None:
    """The pass added exactly ``added`` (typed, aligned) and finaldata.csv equals the dataset."""
    dataset = Dataset(settings.output_folder)
    assert result.dataset_rows == dataset.rows == total
    assert result.batch is not None
    assert result.batch.rows == len(added)
    batch = dataset.read(batches=[result.batch.id])
    assert list(batch.columns) == COLUMNS
    assert same_rows(table_rows(batch), added), table_rows(batch)
    assert batch["exited"].dtype == np.int64
    assert all(batch[c].dtype == np.float64 for c in NUMERIC)
    assert all(isinstance(v, str) for v in batch["corporation"].dropna())
    names = ingested_names(settings)
    assert len(names) == len(set(names))
    snapshot = pd.read_csv(
        settings.output_folder / "finaldata.csv",
        dtype={"corporation": str},
        keep_default_na=False,
        na_values=[""],
    )
    assert list(snapshot.columns) == COLUMNS
    assert table_rows(snapshot) == table_rows(dataset.read())


def remove_entry(path: Path) -> None:
    """What a user does before saving a fixed file where a link, folder or pipe was."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


# --- the corpus --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_corpus(workspace: Settings, tmp_path: Path, case: Case) -> None:
    first = ingest(workspace)
    assert not first.partial
    assert [r.status for r in first.records] == ["ingested"] * 3
    baseline = first.dataset_rows
    folder = workspace.input_folder
    outside = tmp_path / "outside"
    outside.mkdir()
    path = folder / case.name
    case.make(path, outside)
    put_good(folder)
    expected = entries(folder, outside)

    def writer(name: str, done: int, total: int) -> None:
        # called after the folder was scanned and before ``name`` is read
        nonlocal expected
        if name == case.name and case.during is not None:
            case.during(path)
            expected = entries(folder, outside)

    result = ingest(workspace, progress=writer)
    records = by_name(result)

    # the good file goes in, whatever the other one does
    good = records[GOOD_NAME]
    assert (good.status, good.rows_read, good.rows_kept) == ("ingested", 2, 2)
    assert GOOD_NAME in ingested_names(workspace)
    # nothing in the input folder (or behind a link) was deleted or modified
    assert entries(folder, outside) == expected
    assert result.partial is (case.status == "quarantined")
    added = case.rows if case.status == "ingested" else ()
    check_dataset(workspace, result, baseline + len(GOOD_ROWS) + len(added), [*added, *GOOD_ROWS])
    total = result.dataset_rows
    reason = (records[case.name].reason or "") if case.name in records else ""
    for part in case.reason:
        assert part.replace("{name}", case.name) in reason, f"{part!r} not in {reason!r}"

    if case.status == "ingested":
        record = records[case.name]
        assert record.status == "ingested", record.reason
        assert record.rows_kept == len(case.rows)
        if case.rows_read is not None:
            assert record.rows_read == case.rows_read
        if case.note is None:
            assert record.note is None
        else:
            assert case.note in (record.note or "")
        assert case.name in ingested_names(workspace)
        again = ingest(workspace)
        assert again.records == []
        assert case.name in again.unchanged

    elif case.status == "quarantined":
        record = records[case.name]
        assert record.status == "quarantined"
        assert record.rows_kept == 0
        assert record.reason
        stored = [f for f in Dataset(workspace.output_folder).files if f.name == case.name]
        assert stored[-1].status == "quarantined"
        assert stored[-1].reason == record.reason
        # unchanged: not recorded again, the pass is not partial
        again = ingest(workspace)
        assert again.records == []
        assert not again.partial
        assert entries(folder, outside) == expected
        # fixed: the next pass takes it
        remove_entry(path)
        path.write_text(case.fix, encoding="utf-8")
        fixed = ingest(workspace)
        record = by_name(fixed)[case.name]
        rows = case.fix.count("\n") - 1
        assert (record.status, record.rows_read, record.rows_kept) == ("ingested", rows, rows)
        assert not fixed.partial
        check_dataset(workspace, fixed, total + rows, table_rows(pd.read_csv(path)))
        assert case.name in ingested_names(workspace)
        if (outside / "elsewhere.csv").exists():
            assert (outside / "elsewhere.csv").read_text() == csv_text("leak,1,2,3,0")

    elif case.status == "duplicate-file":
        record = records[case.name]
        assert (record.status, record.rows_kept, record.batch) == ("duplicate-file", 0, None)
        assert case.name not in ingested_names(workspace)
        again = ingest(workspace)
        assert again.records == []
        assert case.name in again.unchanged

    elif case.status == "deferred":
        assert case.name not in records
        assert result.deferred == [case.name]
        assert case.name not in {f.name for f in Dataset(workspace.output_folder).files}
        if case.after is not None:
            case.after(path)
        # the writer is done: the next pass reads the whole file
        later = ingest(workspace)
        record = by_name(later)[case.name]
        assert (record.status, record.rows_kept) == ("ingested", len(case.rows))
        assert later.deferred == []
        check_dataset(workspace, later, total + len(case.rows), list(case.rows))

    else:
        assert case.status == "ignored"
        assert case.name not in records
        assert case.name not in result.unchanged
        assert case.name not in result.deferred
        assert case.name not in {f.name for f in Dataset(workspace.output_folder).files}
        assert ingest(workspace).records == []


# --- everything at once ------------------------------------------------------------------------


def _trouble() -> list[tuple[str, Case]]:
    """Every refused or ignored case that needs no writer, each under its own name."""
    chosen = []
    for param in CASES:
        case = param.values[0]
        assert isinstance(case, Case)
        if case.make is bad_twins:  # makes a second file; it has its own case
            continue
        if param.marks or case.during or case.status not in ("quarantined", "ignored"):
            continue
        chosen.append((case.name if case.keep_name else f"{param.id}.csv", case))
    return chosen


@pytest.mark.parametrize("runner", ["python", "cli"])
def test_one_pass_over_all_the_trouble_ingests_exactly_the_good_files(
    workspace: Settings, tmp_path: Path, beryl_cli: CliRunner, runner: str
) -> None:
    baseline = ingest(workspace).dataset_rows
    folder = workspace.input_folder
    outside = tmp_path / "outside"
    outside.mkdir()
    trouble = _trouble()
    assert len({name for name, _ in trouble}) == len(trouble) >= 40
    for name, case in trouble:
        case.make(folder / name, outside)
    put_good(folder, "good_a.csv", (("a-1", 1, 2, 3, 0), ("a-2", 4, 5, 6, 1)))
    put_good(folder, "good_b.csv", (("b-1", 7, 8, 9, 1),))
    before = entries(folder, outside)

    if runner == "python":
        result = ingest(workspace)
        assert result.partial
        assert result.deferred == []
        records = {r.name: (r.status, r.reason or "") for r in result.records}
    else:
        done = beryl_cli("ingest", "--json", config=workspace.root / "config.json")
        assert done.returncode == EXIT_PARTIAL, done.stderr
        output = json.loads(done.stdout)
        assert output["deferred"] == []
        assert output["dataset_rows"] == baseline + 3
        records = {r["name"]: (r["status"], r.get("reason", "")) for r in output["records"]}

    assert sorted(n for n, (status, _) in records.items() if status == "ingested") == [
        "good_a.csv",
        "good_b.csv",
    ]
    refused = [(name, case) for name, case in trouble if case.status == "quarantined"]
    assert len(records) == 2 + len(refused)
    for name, case in refused:
        status, reason = records[name]
        assert status == "quarantined", (name, reason)
        for part in case.reason:
            assert part.replace("{name}", name) in reason, (name, part, reason)
    assert entries(folder, outside) == before
    dataset = Dataset(workspace.output_folder)
    assert dataset.rows == baseline + 3
    assert same_rows(
        table_rows(dataset.read(batches=[dataset.batches[-1].id])),
        [("a-1", 1, 2, 3, 0), ("a-2", 4, 5, 6, 1), ("b-1", 7, 8, 9, 1)],
    )
    assert sorted(ingested_names(workspace)) == [
        "dataset1.csv",
        "dataset2.csv",
        "dataset3.csv",
        "good_a.csv",
        "good_b.csv",
    ]


def test_file_name_that_is_not_utf8_is_quarantined_and_the_pass_goes_on(
    workspace: Settings,
) -> None:
    ingest(workspace)
    folder = os.fsencode(workspace.input_folder)
    bad_name = folder + b"/caf\xe9.csv"
    with open(bad_name, "w", encoding="utf-8") as handle:
        handle.write(csv_text("latin-name,1,2,3,0"))
    put_good(workspace.input_folder, GOOD_NAME, (("g-1", 1, 2, 3, 0),))

    result = ingest(workspace)

    statuses = {r.name: r.status for r in result.records}
    assert statuses == {"caf\ufffd.csv": "quarantined", GOOD_NAME: "ingested"}
    reason = next(r.reason for r in result.records if r.status == "quarantined")
    assert reason is not None and "not valid UTF-8" in reason and "rename" in reason
    assert os.path.exists(bad_name)
    assert ingested_names(workspace)[-1] == GOOD_NAME
    assert ingest(workspace).records == []  # not recorded again while unchanged


def test_the_corpus_read_in_blocks_has_the_same_outcomes(
    workspace: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every case without a writer, each under its own name, in one pass that reads every file
    in blocks of 128 bytes (as a file over 32 MiB is read): the same statuses, reasons and rows."""
    from beryl.data import blocks, ingestion

    baseline = ingest(workspace).dataset_rows
    monkeypatch.setattr(ingestion, "WHOLE_FILE_BYTES", 0)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 128)
    monkeypatch.setattr(blocks, "HELD_BYTES", 512)
    folder = workspace.input_folder
    outside = tmp_path / "outside"
    outside.mkdir()
    chosen = []
    for param in CASES:
        case = param.values[0]
        assert isinstance(case, Case)
        if case.during or case.make is bad_twins or case.status == "duplicate-file":
            continue
        if case.keep_name and case.name.startswith("dataset"):
            continue  # these change an ingested file: one at a time, in test_corpus
        name = case.name if case.keep_name else f"{param.id}.csv"
        case.make(folder / name, outside)
        chosen.append((name, case))
    assert len(chosen) >= 60

    result = ingest(workspace)

    records = by_name(result)
    expected: list[Row] = []
    for name, case in chosen:
        if case.status == "ignored":
            assert name not in records
            continue
        record = records[name]
        assert record.status == case.status, (name, record.reason)
        for part in case.reason:
            assert part.replace("{name}", name) in (record.reason or ""), (name, record.reason)
        expected.extend(case.rows)
    dataset = Dataset(workspace.output_folder)
    assert dataset.rows == baseline + len(expected)
    assert same_rows(table_rows(dataset.read(batches=[dataset.batches[-1].id])), expected)
    assert not list(workspace.output_folder.rglob(".beryl-tmp-*"))
