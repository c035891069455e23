"""Tests for beryl.data.csvfiles: which files a path names, the test data, the careful parse's
fallbacks and the stream ``beryl predict`` reads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pytest

from beryl.data.csvfiles import LATIN1_NOTE, csv_files, read_csv_bytes, read_labelled, stream_rows
from beryl.data.schema import Schema
from beryl.errors import DataError, EmptyDatasetError, SchemaError

SCHEMA = Schema("exited", 1, ["corporation"], ["activity"], [])


def test_csv_files_lists_only_regular_csv_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("x\n1\n")
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "C.CSV").write_text("x\n1\n")
    (tmp_path / "c.txt").write_text("x\n1\n")
    (tmp_path / "sub.csv").mkdir()
    (tmp_path / "link.csv").symlink_to(tmp_path / "a.csv")
    assert [p.name for p in csv_files(tmp_path)] == ["C.CSV", "a.csv", "b.csv"]
    assert csv_files(tmp_path / "a.csv") == [tmp_path / "a.csv"]


def test_csv_files_of_a_missing_path_is_a_data_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no-such-tests"):
        csv_files(tmp_path / "no-such-tests")


def test_read_labelled_reads_every_file_of_a_folder_and_hashes_their_bytes(
    tmp_path: Path,
) -> None:
    first = b"corporation,activity,exited\n007,1.5,1\nabcd, 2 ,0\n"
    second = b"exited,activity,corporation,extra\n0,,efgh,x\n"
    (tmp_path / "a.csv").write_bytes(first)
    (tmp_path / "b.csv").write_bytes(second)
    frame, digest = read_labelled(tmp_path, SCHEMA)
    assert list(frame.columns) == SCHEMA.columns
    assert frame["corporation"].tolist() == ["007", "abcd", "efgh"]
    assert frame["activity"].iloc[:2].tolist() == [1.5, 2.0]
    assert frame["activity"].isna().tolist() == [False, False, True]
    assert frame["exited"].tolist() == [1, 0, 0]
    assert digest == hashlib.sha256(first + second).hexdigest()
    single, one = read_labelled(tmp_path / "a.csv", SCHEMA)
    assert len(single) == 2
    assert one == hashlib.sha256(first).hexdigest()


def test_read_labelled_of_a_folder_without_csv_files_is_an_empty_dataset_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "notes.txt").write_text("not data\n")
    with pytest.raises(EmptyDatasetError, match="no CSV files"):
        read_labelled(tmp_path, SCHEMA)


def test_read_labelled_refuses_a_file_naming_it_and_the_column(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes(b"corporation,activity,exited\na,lots,1\n")
    with pytest.raises(SchemaError, match=r"t\.csv.*'activity'"):
        read_labelled(tmp_path, SCHEMA)


def test_read_csv_bytes_falls_back_to_latin1_and_one_block_together() -> None:
    """Not UTF-8 *and* a row longer than Arrow's parse block: both fallbacks, one after the
    other, as the reader of large files applies them."""
    long = "é" * (3 << 20)
    data = f"corporation,activity,exited\n{long},1,1\nb,2,0\n".encode("latin-1")
    frame = read_csv_bytes(data, "x.csv", SCHEMA.text_columns)
    assert frame["corporation"].tolist() == [long, "b"]
    assert frame.attrs["note"] == LATIN1_NOTE


def test_read_csv_bytes_reads_a_header_longer_than_a_parse_block() -> None:
    names = [f"column_{i}" for i in range(120_000)]  # over 1 MiB of header
    data = (",".join(names) + "\n" + ",".join("1" for _ in names) + "\n").encode()
    frame = read_csv_bytes(data, "wide.csv")
    assert frame.shape == (1, len(names))
    assert frame.columns[-1] == names[-1]


def _scores(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "score.csv"
    path.write_text(text)
    return path


def test_stream_rows_reads_typed_blocks_and_counts_rows(tmp_path: Path) -> None:
    rows = "".join(f"{i:03d},{i}.5,{i % 2},x\n" for i in range(200))
    path = _scores(tmp_path, "corporation,activity,exited,extra\n" + rows)
    with stream_rows(path, SCHEMA, block_bytes=1024) as stream:
        assert stream.names == ["corporation", "activity", "exited", "extra"]
        batches = list(stream)
        assert stream.rows == 200
    assert len(batches) > 1  # bounded blocks, not the whole file
    table = pa.Table.from_batches(batches)
    assert table["corporation"].type == pa.string()  # "007" stays "007"
    assert table["corporation"][7].as_py() == "007"
    assert table["activity"].type == pa.float64()
    assert table["activity"][7].as_py() == 7.5


def test_stream_rows_names_the_column_and_rows_of_a_value_that_is_not_a_number(
    tmp_path: Path,
) -> None:
    rows = ["a,1,1"] * 300 + ["b,lots,0"]
    path = _scores(tmp_path, "corporation,activity,exited\n" + "\n".join(rows) + "\n")
    with (
        stream_rows(path, SCHEMA, block_bytes=512) as stream,
        pytest.raises(SchemaError) as refused,
    ):
        list(stream)
    message = str(refused.value)
    # the header is line 1: the bad value is on line 302, whichever block Arrow met it in
    assert "score.csv line 302: column 'activity' has a value that is not a number ('lots')" in (
        message
    )
    assert 0 < stream.rows <= 300


@pytest.mark.parametrize("content", ["", "\n"])
def test_stream_rows_of_an_unreadable_file_is_a_schema_error_naming_it(
    tmp_path: Path, content: str
) -> None:
    with pytest.raises(SchemaError, match=r"score\.csv: not a readable CSV file"):
        stream_rows(_scores(tmp_path, content), SCHEMA)
