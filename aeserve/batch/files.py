"""Chunked input (CSV, Parquet files and folders) and streaming output (CSV, Parquet).

Memory stays bounded by the batch size, whatever the file size: CSV is read with
`pyarrow.csv.open_csv` one block at a time, Parquet with `ParquetFile.iter_batches`, and only the
columns the job needs are decoded. Output goes to `<out>.partial` and is renamed into place when
the job succeeds, so a failed job never leaves a file that looks complete.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from aeserve.batch.model import ScoringError, input_columns

CSV_SUFFIXES = {".csv"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
#: Bytes of CSV text parsed per block (one block is one batch of rows).
CSV_BLOCK_BYTES = 8 << 20


def file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise ScoringError(f"{path.name}: unsupported format {suffix or '(no suffix)'!r}; use .csv, "
                       f".parquet or a folder of .parquet files")


def parquet_files(path: Path) -> list[Path]:
    """A Parquet file, or every Parquet file under a folder, in name order."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in PARQUET_SUFFIXES
                       and p.is_file() and not p.name.startswith((".", "_")))
        if not files:
            raise ScoringError(f"folder {path} holds no .parquet files")
        return files
    if not path.is_file():
        raise ScoringError(f"data not found: {path}")
    file_kind(path)
    return [path]


class Source:
    """Batches of the needed columns, with what a progress bar needs (`total`, `position`)."""

    unit = "rows"
    total: int | None = None
    schema: pa.Schema  # of the columns the batches hold


    def batches(self) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def position(self) -> int:
        raise NotImplementedError


class ParquetSource(Source):
    def __init__(self, path: Path, columns: list[str], batch_rows: int) -> None:
        self.files = parquet_files(path)
        self.columns = columns
        self.batch_rows = batch_rows
        self.total = 0
        for file in self.files:
            schema = pq.read_schema(file)
            if file == self.files[0]:
                self.schema = pa.schema([schema.field(name) for name in columns if name in
                                         schema.names])
            missing = [name for name in columns if name not in schema.names]
            if missing:
                raise ScoringError(f"{file.name} lacks columns {missing} (it has "
                                   f"{schema.names})")
            self.total += pq.read_metadata(file).num_rows
        self._rows = 0

    def batches(self) -> Iterator[pa.RecordBatch]:
        for file in self.files:
            # pre_buffer (pyarrow's default) reads ahead without bound on large files: the
            # resident memory grew with the file; buffered reads of 1 MB keep it flat.
            with pq.ParquetFile(file, pre_buffer=False, buffer_size=1 << 20) as parquet:
                for batch in parquet.iter_batches(batch_size=self.batch_rows,
                                                  columns=self.columns):
                    self._rows += batch.num_rows
                    yield batch

    def position(self) -> int:
        return self._rows


class CSVSource(Source):
    """CSV with a header row. Features are parsed as float64 (then rounded to float32, as the
    server does with JSON numbers); the id and kept columns are kept as the text in the file, so
    ids such as `007` survive and every block has the same schema."""

    unit = "B"

    def __init__(self, path: Path, features: list[str], carried: Sequence[str] = (),
                 block_bytes: int = CSV_BLOCK_BYTES) -> None:
        if not path.is_file():
            raise ScoringError(f"data not found: {path}")
        header = read_csv_header(path)
        columns = input_columns(features, carried)
        extra = columns[len(features):]
        missing = [name for name in columns if name not in header]
        if missing:
            raise ScoringError(f"{path.name} lacks columns {missing} (its header has {header})")
        self.path = path
        self.total = path.stat().st_size
        types = {name: pa.float64() for name in features}
        types.update({name: pa.string() for name in extra})  # as in the file, every block alike
        self.schema = pa.schema([(name, types[name]) for name in columns])
        self._convert = pv.ConvertOptions(include_columns=columns, column_types=types)
        self._read = pv.ReadOptions(block_size=block_bytes)
        self._position = 0

    def batches(self) -> Iterator[pa.RecordBatch]:
        with pa.OSFile(str(self.path), "rb") as stream:
            try:
                reader = pv.open_csv(stream, read_options=self._read,
                                     convert_options=self._convert)
                for batch in reader:
                    self._position = stream.tell()  # bytes read so far (the reader reads ahead)
                    yield batch
            except pa.ArrowInvalid as exc:
                raise ScoringError(f"cannot parse {self.path.name}: {exc}") from None
        self._position = self.total

    def position(self) -> int:
        return self._position


def read_csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        try:
            return next(csv.reader(handle))
        except StopIteration:
            raise ScoringError(f"{path.name} is empty") from None


def open_source(path: Path, features: list[str], carried: Sequence[str],
                batch_rows: int) -> Source:
    """A reader of `features` and the `carried` columns (id, kept columns) of a file."""
    columns = input_columns(features, carried)
    if path.is_dir() or file_kind(path) == "parquet":
        return ParquetSource(path, columns, batch_rows)
    return CSVSource(path, features, carried)


class Sink:
    """Streams result tables into one CSV or Parquet file, renamed into place on `commit`.

    As a context manager it commits when its block succeeds and aborts otherwise.
    """

    def __init__(self, path: Path) -> None:
        self.kind = file_kind(path)
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self._writer: pq.ParquetWriter | pv.CSVWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self.kind == "csv":  # CSV has no dictionary type: write the feature names as text
            table = pa.table({name: column.cast(pa.string())
                              if pa.types.is_dictionary(column.type) else column
                              for name, column in zip(table.column_names, table.columns,
                                                      strict=True)})
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.kind == "csv":
                self._writer = pv.CSVWriter(str(self.partial), table.schema)
            else:  # dictionaries only where they pay: floats rarely repeat, feature names do
                dictionary = [field.name for field in table.schema
                              if pa.types.is_dictionary(field.type)]
                self._writer = pq.ParquetWriter(str(self.partial), table.schema,
                                                use_dictionary=dictionary)
        self._writer.write_table(table)

    def commit(self) -> None:
        if self._writer is None:
            raise RuntimeError("commit before any write: write an empty result table first")
        self._writer.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        """Commit when the block succeeded; on any exception (interrupts too, and a commit
        that fails), abort."""
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()
