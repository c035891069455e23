"""Writing a batch's files: Parquet row groups, sorted row hashes and rows of the CSV snapshot.

The dataset (``beryl.data.dataset``) decides what is published; this module only writes, each file
either atomically (the batch, its hashes) or appended in place and cut back on failure (the
snapshot, ``beryl.data.snapshot``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from beryl._io import atomic_path
from beryl.data import snapshot

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from beryl.data.dataset import Dataset


class BatchWriter:
    """Writes one batch as its rows arrive: Parquet row groups, sorted hashes, snapshot rows.

    Use as a context manager: leaving the block normally makes the batch file and its hashes
    durable, still unnamed by any manifest until the caller commits one; leaving it with an error
    removes the temporary batch file and cuts the snapshot back. Rows are written on background
    threads, one per file (Arrow's writers release the GIL), while the caller reads more;
    ``drain`` waits for them, which bounds how many tables are held.
    """

    def __init__(
        self, dataset: Dataset, batch_id: str, write_snapshot: bool, id_columns: list[str]
    ) -> None:
        self.dataset = dataset
        self.batch_id = batch_id
        self.rows = 0
        self.appended = write_snapshot and snapshot.appendable(dataset)
        self._id_columns = set(id_columns)
        self._hashes: list[np.ndarray] = []
        self._stack = ExitStack()
        self._parquet: pq.ParquetWriter | None = None
        self._snapshot: Callable[[pa.Table], None] | None = None
        # one thread per writer: the Parquet file and the CSV snapshot are written side by side
        self._threads = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"beryl-{name}")
            for name in ("parquet", "csv")
        ]
        self._pending: list[Future[None]] = []

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            for thread in self._threads:
                thread.shutdown(wait=True)
            if self._parquet is not None:
                self._parquet.close()
            if error is None:
                for job in self._pending:
                    job.result()  # a write that failed fails the batch
                if self._hashes:
                    hashes = np.sort(np.concatenate(self._hashes))
                    write_hashes(self.dataset.hashes_path(self.batch_id), hashes)
        except BaseException as failure:  # undo everything, then report the failure
            self._stack.__exit__(type(failure), failure, failure.__traceback__)
            raise
        # an error undoes the batch file and the snapshot rows; success keeps both
        self._stack.__exit__(kind, error, trace)

    def append(self, table: pa.Table, hashes: np.ndarray) -> None:
        """Add rows that are new to the dataset, with their row hashes."""
        if table.num_rows == 0:
            return
        if self._parquet is None:
            self._open(table.schema)
        assert self._parquet is not None
        parquet, csv = self._threads
        self._pending.append(parquet.submit(self._parquet.write_table, table))
        if self._snapshot is not None:
            self._pending.append(csv.submit(self._snapshot, table))
        self._hashes.append(hashes)
        self.rows += table.num_rows

    def drain(self) -> None:
        """Wait until every table handed over so far is written (re-raising a failed write)."""
        while self._pending:
            self._pending.pop(0).result()

    def _open(self, schema: pa.Schema) -> None:
        import pyarrow.parquet as pq  # on the first rows: an ingestion of nothing writes none

        tmp = self._stack.enter_context(atomic_path(self.dataset.batch_path(self.batch_id)))
        # identifiers are mostly unique: a dictionary would only cost time; no reader filters
        # on column statistics, so none are computed
        encoded = [c for c in schema.names if c not in self._id_columns]
        self._parquet = pq.ParquetWriter(
            tmp, schema, use_dictionary=encoded, write_statistics=False
        )
        if self.appended:
            fresh = not self.dataset.manifest.batches
            header = list(schema.names) if fresh else None
            self._snapshot = self._stack.enter_context(
                snapshot.appending(self.dataset.snapshot_path, header)
            )


def write_hashes(path: Path, hashes: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, hashes, allow_pickle=False)
