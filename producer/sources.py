"""Input sources: CSV and Parquet in column batches (pyarrow), JSON lines record by record.

A source yields :class:`Chunk` objects and counts the rows its reader had to reject (wrong
column count, unparseable JSON) with their line numbers. The CSV source parses on its own thread,
one block ahead, so parsing and hashing use both cores. Line numbers of CSV rows are exact
unless the file has blank lines between records (pyarrow skips those silently).
"""
from __future__ import annotations

import bisect
import contextlib
import json
import os
import queue
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shared.errors import ConfigError, RecordError

from producer.schema import Schema

if TYPE_CHECKING:
    from producer.csvplain import PlainCsv, RawBatch

# 4 MiB blocks: the reader thread runs ahead of the hasher, so a smaller block leaves less of the
# file (the first block's parse, the last block's hashing) outside that overlap
DEFAULT_BLOCK_BYTES = 4 << 20
# CSV the reader may parse ahead of the hasher. Little is needed in steady state (parsing is the
# faster stage), but a run starts with ~1 s of imports and numba loading its cached kernels on the
# main thread, during which the reader runs alone: 128 MiB lets it parse the benchmark's whole
# 85 MB file meanwhile (1.10x less wall than 8 blocks; held as Arrow columns it takes ~1.7x its CSV size,
# as raw blocks and their field ends ~1.9x; docs/producer.md). ``hashbridge produce --readahead-mib`` sets it.
DEFAULT_READAHEAD_BYTES = 128 << 20
DEFAULT_READAHEAD_BLOCKS = DEFAULT_READAHEAD_BYTES // DEFAULT_BLOCK_BYTES
# columns are read as plain strings, which the hasher probes in its value tables straight from the
# Arrow buffers; pyarrow's reader spends more CPU when it builds dictionaries itself (docs/producer.md)
STRING = pa.string()


@dataclass(slots=True)
class Chunk:
    """A batch of input rows: a column batch or a list of records, plus its position."""

    first_row: int  # global ordinal of the first accepted row (0-based)
    batch: pa.RecordBatch | RawBatch | None = None  # RawBatch: a CsvSource with raw_batches
    records: list[dict[str, Any]] | None = None
    record_lines: list[int] | None = None  # line number per record (record sources)
    bytes_read: int = 0  # of the input, for progress

    @property
    def num_rows(self) -> int:
        return self.batch.num_rows if self.batch is not None else len(self.records or [])


@dataclass(slots=True)
class Rejects:
    """Rows the reader itself refused, in input order."""

    rows: list[tuple[int, str, str]] = field(default_factory=list)  # (line, reason, detail)

    def add(self, line: int, reason: str, detail: str = "") -> None:
        self.rows.append((line, reason, detail))


class _ReadAhead:
    """Chunks of ``read()`` produced on a thread, up to ``depth`` ahead of the consumer; an
    exception of the reader is raised in the consumer's thread, in order."""

    def __init__(self, read: Callable[[], Iterator[Chunk]], depth: int) -> None:
        self._queue: queue.Queue[Chunk | BaseException | None] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._read = read
        self._thread = threading.Thread(target=self._produce, name="csv-reader", daemon=True)
        self._thread.start()

    def _offer(self, item: Chunk | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _produce(self) -> None:
        try:
            with contextlib.closing(self._read()) as chunks:
                for chunk in chunks:
                    if not self._offer(chunk):
                        return
            self._offer(None)
        except BaseException as exc:  # handed to the consumer's thread, raised there
            self._offer(exc)

    def __iter__(self) -> Iterator[Chunk]:
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class CsvSource:
    """Streams a CSV file in column batches; every read column is strings (never inferred numbers)."""

    def __init__(self, path: str | Path, schema: Schema, columns: tuple[str, ...],
                 block_bytes: int = DEFAULT_BLOCK_BYTES, skip_rows: int = 0, use_threads: bool = False,
                 readahead_blocks: int = DEFAULT_READAHEAD_BLOCKS, plain: bool = True,
                 raw_batches: bool = False) -> None:
        self.path, self.schema, self.columns = Path(path), schema, columns
        self.plain = plain  # try producer.csvplain first (False: pyarrow reads it all)
        # hand uniform blocks on as producer.csvplain.RawBatch (the hasher probes them where they
        # lie); False: every batch is Arrow, as other readers of a source expect
        self.raw_batches = raw_batches
        self.block_bytes, self.skip_rows, self.use_threads = block_bytes, skip_rows, use_threads
        self.readahead_blocks = readahead_blocks
        self._ahead: _ReadAhead | None = None
        self.rejects = Rejects()
        self.size = self.path.stat().st_size
        self._bad_lines: list[int] = []
        self._header_lines = skip_rows + (1 if schema.header else 0)
        self._line_base = 0  # lines before the part pyarrow reads (read by producer.csvplain)

    def _on_invalid(self, row: Any) -> str:
        line = row.number + self._line_base if row.number is not None else -1
        self.rejects.add(line, "wrong_column_count", f"{row.actual_columns} of {row.expected_columns} columns")
        if line > 0:
            bisect.insort(self._bad_lines, line)
        return "skip"

    def line_of(self, row: int) -> int:
        """File line (1-based) of accepted row ``row`` (0-based), counting rejected lines before it."""
        line = self._header_lines + row + 1
        k = 0
        while k < len(self._bad_lines) and self._bad_lines[k] <= line + k:
            k += 1
        return line + k

    def start(self) -> None:
        """Begin parsing now, on the reader thread, so that the blocks are ready when the caller
        asks (the producer starts it before its kernels load). Iterating starts it if needed."""
        if self._ahead is None:
            if self.plain:
                # numba is imported here, on the caller's thread: imported on the reader's thread
                # while the caller imports it too, numba half-initialised fails (a circular import)
                from producer import csvplain  # noqa: F401
            self._ahead = _ReadAhead(self._read, self.readahead_blocks)

    def close(self) -> None:
        """Stop a reader that was started but not read to its end."""
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def __iter__(self) -> Iterator[Chunk]:
        """Chunks in order, parsed on a second thread while the caller works on earlier ones
        (pyarrow's parser and the hash kernel both release the GIL)."""
        self.start()
        try:
            yield from self._ahead  # type: ignore[misc]
        finally:
            self.close()

    def _read(self) -> Iterator[Chunk]:
        """The plain part of the file by :mod:`producer.csvplain`, the rest (if any) by pyarrow."""
        plain = None
        if self.plain:
            from producer import csvplain  # imported by start() (numba: not at this module's import)

            plain = csvplain.open_plain(self.path, self.schema.names, self.schema.header, self.skip_rows,
                                        self.schema.delimiter, self.columns, self.block_bytes)
        row = 0
        if plain is not None:
            for batch, consumed in plain:
                if not self.raw_batches and isinstance(batch, csvplain.RawBatch):
                    batch = batch.to_arrow()
                yield Chunk(row, batch=batch, bytes_read=consumed)
                row += batch.num_rows
            if plain.offset is None:
                return
            self._line_base = plain.lines
        yield from self._read_arrow(row, plain)

    def _read_arrow(self, row: int, plain: PlainCsv | None) -> Iterator[Chunk]:
        """Rows from where ``plain`` stopped (from the start without it), by pyarrow's reader."""
        if plain is None:
            names, skip = list(self.schema.names) if self.schema.names else None, self.skip_rows
        else:
            names, skip = plain.names, 0
        read = pacsv.ReadOptions(use_threads=self.use_threads, block_size=self.block_bytes, skip_rows=skip,
                                 column_names=names, autogenerate_column_names=False)
        parse = pacsv.ParseOptions(delimiter=self.schema.delimiter, invalid_row_handler=self._on_invalid)
        convert = pacsv.ConvertOptions(include_columns=list(self.columns),
                                       column_types={c: STRING for c in self.columns},
                                       strings_can_be_null=False, quoted_strings_can_be_null=False,
                                       check_utf8=False)  # the hasher checks it per row: producer/utf8.py
        f = pa.OSFile(str(self.path), "rb")
        try:
            if plain is not None:
                f.seek(plain.offset)
            try:
                reader = pacsv.open_csv(f, read_options=read, parse_options=parse, convert_options=convert)
            except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
                raise ConfigError(f"cannot read {self.path.name} as CSV with this schema: {exc}") from None
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowInvalid as exc:
                    raise RecordError(f"{self.path.name}: {exc}", "unreadable") from None
                if batch.num_rows:
                    yield Chunk(row, batch=batch, bytes_read=f.tell())
                    row += batch.num_rows
        finally:
            f.close()


class ParquetSource:
    def __init__(self, path: str | Path, columns: tuple[str, ...], batch_rows: int = 65536) -> None:
        self.path, self.columns, self.batch_rows = Path(path), columns, batch_rows
        self.rejects = Rejects()
        self.size = self.path.stat().st_size

    def line_of(self, row: int) -> int:
        return row + 1  # Parquet has rows, not lines: report the 1-based row number

    def __iter__(self) -> Iterator[Chunk]:
        pf = pq.ParquetFile(self.path)
        total, row = max(pf.metadata.num_rows, 1), 0
        for batch in pf.iter_batches(batch_size=self.batch_rows, columns=list(self.columns)):
            yield Chunk(row, batch=batch, bytes_read=int(self.size * (row + batch.num_rows) / total))
            row += batch.num_rows


class JsonLinesSource:
    """One JSON object per line from a file or stdin (``-``); bad lines are rejected with their number."""

    def __init__(self, path: str | Path, chunk_records: int = 4096) -> None:
        self.path, self.chunk_records = str(path), chunk_records
        self.rejects = Rejects()
        self.size = os.path.getsize(self.path) if self.path != "-" else 0

    def line_of(self, row: int) -> int:
        return self._lines_by_row.get(row, -1)

    def __iter__(self) -> Iterator[Chunk]:
        self._lines_by_row: dict[int, int] = {}
        stream: IO[bytes] = sys.stdin.buffer if self.path == "-" else open(self.path, "rb")
        try:
            records: list[dict[str, Any]] = []
            lines: list[int] = []
            row, pos = 0, 0
            for lineno, raw in enumerate(stream, 1):
                pos += len(raw)
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw)
                except ValueError:
                    self.rejects.add(lineno, "bad_json")
                    continue
                if not isinstance(rec, dict):
                    self.rejects.add(lineno, "not_an_object")
                    continue
                records.append(rec)
                lines.append(lineno)
                if len(records) >= self.chunk_records:
                    yield Chunk(row, records=records, record_lines=lines, bytes_read=pos)
                    row += len(records)
                    records, lines = [], []
            if records:
                yield Chunk(row, records=records, record_lines=lines, bytes_read=pos)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()


def open_source(path: str, schema: Schema, columns: tuple[str, ...], fmt: str | None = None,
                skip_rows: int = 0, block_bytes: int = DEFAULT_BLOCK_BYTES, use_threads: bool = False,
                chunk_records: int = 4096,
                readahead_bytes: int = DEFAULT_READAHEAD_BYTES,
                plain: bool = True, raw_batches: bool = False) -> CsvSource | ParquetSource | JsonLinesSource:
    """A source for ``path`` by format (csv, parquet, jsonl), guessed from the suffix when not given."""
    if fmt is None:
        suffix = Path(path).suffix.lower()
        fmt = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl",
               ".ndjson": "jsonl"}.get(suffix, "csv")
        if path == "-":
            fmt = "jsonl"
    if fmt == "csv":
        return CsvSource(path, schema, columns, block_bytes, skip_rows, use_threads,
                         readahead_blocks=max(1, readahead_bytes // block_bytes), plain=plain,
                         raw_batches=raw_batches)
    if fmt == "parquet":
        return ParquetSource(path, columns)
    if fmt == "jsonl":
        return JsonLinesSource(path, chunk_records)
    raise ConfigError(f"unknown input format {fmt!r} (csv, parquet, jsonl)")
