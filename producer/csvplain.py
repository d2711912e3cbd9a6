"""A reader for plain CSV files: rows cut into string columns by two numba passes, no Arrow parser.

Why: on the benchmark's first file after a start (85 MB, 21 columns, values of ~4 bytes), pyarrow's
CSV reader took 0.4-0.9 CPU-s with a third of it in the kernel (fresh allocator pages), as much as
hashing the rows. One pass that finds the field bounds of every line and one that copies each
wanted column into an Arrow string array, a word at a time, took ~0.23 s (docs/producer.md).
Since session 11 a uniform block (LF line ends, no quote, every line complete: the common case)
is not copied at all: the list of its delimiters and line ends is already every field's bounds,
and the hasher probes its value tables straight from the block (:class:`RawBatch`, ~0.05 s for
the file). Other readers of a source get Arrow columns, copied from the block when asked for.

Plain means: a one-byte delimiter; lines end in LF or CRLF; no quote character anywhere; no empty
line; every line has the header's number of fields. The first block that breaks any of this is
handed, with the rest of the file, to pyarrow's reader, which knows every rule of CSV and reports
bad rows (:class:`producer.sources.CsvSource` does that). The columns are the same either way:
plain strings (empty is ``""``, never null), bytes as in the file (UTF-8 is checked by the hasher).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numba
import numpy as np
import pyarrow as pa

from shared.unaligned import load64, store64

from producer.utf8 import all_ascii

_PLAIN, _DELIM, _LF, _CR, _BREAK = 0, 1, 2, 3, 4  # byte classes
_BOM = b"\xef\xbb\xbf"
_PAD = 8  # bytes after each buffer the word copies may touch


def byte_classes(delimiter: int) -> np.ndarray:
    classes = np.full(256, _PLAIN, dtype=np.uint8)
    classes[ord('"')] = _BREAK
    classes[ord("\r")] = _CR
    classes[ord("\n")] = _LF
    classes[delimiter] = _DELIM
    return classes


@numba.njit(cache=True, nogil=True)
def _specials(buf: np.ndarray, n: int, special: np.ndarray, pos: np.ndarray) -> int:
    """The positions in ``buf[:n]`` of every byte that is not plain, into ``pos``; returns how many.

    Branch-free on purpose: the position is always stored and the count grows by the byte's 0 or
    1, a word read at a time. A loop that branched on every byte mispredicted at every field's end
    (every ~5 bytes here); this pass takes ~0.6 ns a byte."""
    c = np.uint64(0)
    for q in range(0, n - 7, 8):
        w = load64(buf, q)
        for j in range(8):
            pos[c] = q + j
            c += np.uint64(special[(w >> np.uint64(8 * j)) & np.uint64(0xFF)])
    for p in range(n // 8 * 8, n):
        pos[c] = p
        c += np.uint64(special[buf[p]])
    return int(c)


@numba.njit(cache=True, nogil=True)
def split_uniform(buf: np.ndarray, count: int, delimiter: int, fields: int, ends: np.ndarray) -> int:
    """The lines of a block (which ends with LF) when it is uniform: no CR or quote anywhere,
    every line ``fields`` fields (at least 2) and not empty. ``ends[1:count + 1]`` lists the
    block's non-plain bytes (:func:`_specials`); in a uniform block they are exactly every field's
    end (its delimiter or line end), so with ``ends[0] = -1`` field ``j`` of line ``i`` is
    ``buf[ends[i * fields + j] + 1:ends[i * fields + j + 1]]``: found with no walk and no copy
    (:class:`RawBatch`). Returns -1 otherwise (:func:`split_lines` decides)."""
    ends[0] = -1
    if fields < 2 or count % fields:
        return -1
    lines = count // fields
    for i in range(lines):
        base = 1 + i * fields
        for j in range(fields - 1):
            if buf[ends[base + j]] != delimiter:
                return -1
        if buf[ends[base + fields - 1]] != 10:
            return -1
    return lines


@numba.njit(cache=True, nogil=True)
def split_lines(buf: np.ndarray, classes: np.ndarray, fields: int, want: np.ndarray,
                starts: np.ndarray, stops: np.ndarray, pos: np.ndarray, count: int) -> int:
    """Bounds of the wanted fields (``want[field]`` is the output column, or -1) of the lines of a
    block that ends with LF, into ``starts``/``stops[line, column]``. Returns the number of lines,
    or -1 if the block is not plain (the caller gives it to pyarrow). ``pos[:count]`` lists the
    block's delimiters, line ends and other non-plain bytes (:func:`_specials`), walked here line
    by line."""
    line, i, first = 0, 0, 0
    while i < count:
        field, start = 0, first
        while True:
            p = np.int64(pos[i])
            i += 1
            k = classes[buf[p]]
            if k == _BREAK:
                return -1
            if k == _CR:
                if buf[p + 1] != 10:
                    return -1
                continue  # its LF is the next position
            stop = p
            if k == _LF:
                if p == first or (p == first + 1 and buf[first] == 13):
                    return -1  # an empty line: pyarrow skips it
                if buf[p - 1] == 13:
                    stop = p - 1
            if field >= fields:
                return -1
            o = want[field]
            if o >= 0:
                starts[line, o] = start
                stops[line, o] = stop
            field += 1
            start = p + 1
            if k == _LF:
                break
        if field != fields:
            return -1
        first = start
        line += 1
    return line


@numba.njit(cache=True, nogil=True)
def field_bounds(ends: np.ndarray, fields: int, js: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> None:
    """``starts``/``stops[line, o]`` of file column ``js[o]`` of a uniform block's lines, from its
    field ends (:func:`split_uniform`), for :func:`gather`."""
    for r in range(starts.shape[0]):
        base = r * fields
        for o in range(js.shape[0]):
            e = base + js[o]
            starts[r, o] = ends[e] + 1
            stops[r, o] = ends[e + 1]


@numba.njit(cache=True, nogil=True)
def gather(buf: np.ndarray, starts: np.ndarray, stops: np.ndarray, bases: np.ndarray,
           out: np.ndarray, offsets: np.ndarray) -> None:
    """Copy column ``o`` of every line to ``out[bases[o]:]`` and its Arrow offsets to
    ``offsets[o]``, 8 bytes at a time (``buf`` and each column's space end ``_PAD`` bytes early)."""
    lines, columns = starts.shape
    at = bases.copy()
    offsets[:, 0] = 0
    for r in range(lines):
        for o in range(columns):
            a, size = starts[r, o], stops[r, o] - starts[r, o]
            q = at[o]
            for k in range(0, size, 8):
                store64(out, q + k, load64(buf, a + k))
            at[o] = q + size
            offsets[o, r + 1] = at[o] - bases[o]


def arrow_batch(buf: np.ndarray, starts: np.ndarray, stops: np.ndarray, columns: tuple[str, ...]) -> pa.RecordBatch:
    """The fields ``buf[starts[line, o]:stops[line, o]]`` as string column ``o`` of a batch (copied)."""
    lines = starts.shape[0]
    sizes = (stops - starts).sum(axis=0, dtype=np.int64)
    bases = np.zeros(len(columns), dtype=np.int64)
    np.cumsum(sizes[:-1] + _PAD, out=bases[1:])
    out = np.empty(int(sizes.sum()) + _PAD * len(columns), dtype=np.uint8)
    offsets = np.empty((len(columns), lines + 1), dtype=np.int32)
    gather(buf, starts, stops, bases, out, offsets)
    data = pa.py_buffer(out)
    arrays = [pa.StringArray.from_buffers(lines, pa.py_buffer(offsets[o]), data.slice(int(bases[o]), int(sizes[o])))
              for o in range(len(columns))]
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))


@dataclass(eq=False)
class RawBatch:
    """The lines of a uniform block as they are in the file (:func:`split_uniform`): the block's
    bytes and the end of every field, no column copied.

    Why: copying each column out into Arrow strings (and walking the lines to find them) was most
    of the reader thread's ~0.3 CPU-s per benchmark file, while the hasher's value tables only
    need each value's bytes where they are (:meth:`raw`). Other readers of a batch get Arrow
    columns (:meth:`column`, :meth:`to_arrow`), copied when asked for."""

    buf: np.ndarray  # the block; at least _PAD bytes follow the last line
    ends: np.ndarray  # int32: -1, then every field's end, line after line
    names: list[str]  # the file's columns, in order
    columns: tuple[str, ...]  # the ones read (to_arrow's)
    num_rows: int

    def raw(self, name: str) -> tuple[np.ndarray, np.ndarray, int, int, int, int]:
        """Column ``name`` for the value-table kernel: (bytes, ends, stride, column, 1, rows); the
        field of row ``r`` is ``bytes[ends[r * stride + column] + 1:ends[r * stride + column + 1]]``."""
        return self.buf, self.ends, len(self.names), self.names.index(name), 1, self.num_rows

    def _bounds(self, js: list[int]) -> tuple[np.ndarray, np.ndarray]:
        starts = np.empty((self.num_rows, len(js)), dtype=np.int32)
        stops = np.empty_like(starts)
        field_bounds(self.ends, len(self.names), np.array(js, dtype=np.int64), starts, stops)
        return starts, stops

    def column(self, name: str) -> pa.Array:
        """One column as Arrow strings (a copy)."""
        return arrow_batch(self.buf, *self._bounds([self.names.index(name)]), (name,)).column(0)

    def to_arrow(self) -> pa.RecordBatch:
        """The read columns as an Arrow batch of strings, as the reader made before (a copy)."""
        return arrow_batch(self.buf, *self._bounds([self.names.index(c) for c in self.columns]), self.columns)

    def ascii(self) -> bool:
        """True if no byte of the lines has its high bit set (then every value is UTF-8)."""
        return all_ascii(self.buf[:int(self.ends[self.num_rows * len(self.names)]) + 1])

    def slice(self, offset: int, length: int) -> RawBatch:
        """The first ``length`` rows (the only slice the producer takes: ``--max-records``)."""
        if offset:
            raise ValueError("a RawBatch is only cut at its end")
        return RawBatch(self.buf, self.ends, self.names, self.columns, min(length, self.num_rows))


@dataclass
class PlainCsv:
    """The plain part of a CSV file, in Arrow batches of the ``columns`` (all strings).

    After iterating, ``offset`` is where pyarrow must take over (``None``: the file was read to its
    end) and ``lines`` how many lines came before it, the header included.
    """

    path: Path
    names: list[str]  # the file's columns in order
    columns: tuple[str, ...]
    delimiter: int
    offset: int | None  # where the data lines start; afterwards as described above
    block_bytes: int
    size: int  # of the file
    lines: int = 0

    def __iter__(self) -> Iterator[tuple[pa.RecordBatch | RawBatch, int]]:
        """(batch, bytes of the file consumed so far): a :class:`RawBatch` for a uniform block,
        else Arrow strings. Each block gets a fresh buffer, since a raw batch keeps it."""
        want = np.full(len(self.names), -1, dtype=np.int64)
        for o, c in enumerate(self.columns):
            want[self.names.index(c)] = o
        classes = byte_classes(self.delimiter)
        special = (classes != _PLAIN).astype(np.uint8)
        bounds = self._bounds(2 * self.block_bytes + _PAD)  # scratch, reused (batches keep copies)
        tail = np.empty(0, dtype=np.uint8)  # the start of a line the last block cut off
        base = int(self.offset or 0)  # file offset of the next block's first byte
        with open(self.path, "rb") as f:
            f.seek(base)
            while True:
                held = tail.shape[0]
                buf = np.empty(held + self.block_bytes + _PAD, dtype=np.uint8)  # a raw batch keeps it
                buf[:held] = tail
                if buf.shape[0] >= bounds[2].shape[0]:  # a line longer than a block
                    bounds = self._bounds(buf.shape[0])
                got = f.readinto(memoryview(buf)[held:held + self.block_bytes])
                end = held + got
                if end == 0:
                    self.offset = None
                    return
                if got == 0:  # the last line has no line end
                    buf[end] = 10
                    cut = end = end + 1
                else:
                    cut = _last_lf(buf, end)
                    if cut == 0:
                        tail = buf[:end]
                        continue
                batch = self._batch(buf, cut, want, classes, special, bounds)
                if batch is None:
                    self.offset = base
                    return
                base += cut
                self.lines += batch.num_rows
                yield batch, min(base, self.size)
                tail = buf[cut:end]

    def _bounds(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Starts and stops for up to ``size`` bytes of lines (a line has a byte per field at
        least), and the split's scratch of positions (one more: ``ends[0]``)."""
        shape = (size // len(self.names) + 1, len(self.columns))
        return np.empty(shape, np.int32), np.empty(shape, np.int32), np.empty(size + 1, np.int32)

    def _batch(self, buf: np.ndarray, n: int, want: np.ndarray, classes: np.ndarray, special: np.ndarray,
               bounds: tuple[np.ndarray, np.ndarray, np.ndarray]) -> pa.RecordBatch | RawBatch | None:
        """The lines of ``buf[:n]`` as a batch, or ``None`` if they are not plain."""
        if n >= (1 << 31) - _PAD:
            return None
        starts, stops, pos = bounds
        fields = len(self.names)
        count = _specials(buf, n, special, pos[1:])  # every byte's position is stored on the way
        lines = split_uniform(buf, count, self.delimiter, fields, pos)
        if lines >= 0:
            return RawBatch(buf, pos[:lines * fields + 1].copy(), self.names, self.columns, lines)
        lines = split_lines(buf, classes, fields, want, starts, stops, pos[1:], count)
        if lines < 0:
            return None
        return arrow_batch(buf, starts[:lines], stops[:lines], self.columns)


def _last_lf(buf: np.ndarray, end: int) -> int:
    """One past the last LF in ``buf[:end]``, 0 if there is none."""
    hi = end
    while hi > 0:
        lo = max(0, hi - 4096)
        hits = np.flatnonzero(buf[lo:hi] == 10)
        if hits.shape[0]:
            return lo + int(hits[-1]) + 1
        hi = lo
    return 0


def open_plain(path: Path, names: tuple[str, ...] | None, header: bool, skip_rows: int, delimiter: str,
               columns: tuple[str, ...], block_bytes: int) -> PlainCsv | None:
    """A :class:`PlainCsv` of the file, or ``None`` when its start is not plain (pyarrow reads it
    all): a byte-order mark, skipped rows, a quoted or missing header name, a multi-byte delimiter."""
    code = delimiter.encode("utf-8")
    if skip_rows or len(code) != 1 or code in b'"\r\n' or header == (names is not None):
        return None
    with open(path, "rb") as f:
        first = f.readline(1 << 20)
    if first.startswith(_BOM) or not first:
        return None
    offset = 0
    if header:
        if not first.endswith(b"\n"):
            return None
        raw = first[:-2] if first.endswith(b"\r\n") else first[:-1]
        if b'"' in raw or b"\r" in raw:
            return None
        try:
            names = tuple(raw.decode("utf-8").split(delimiter))
        except UnicodeDecodeError:
            return None
        offset = len(first)
    assert names is not None
    if len(set(names)) != len(names) or any(c not in names for c in columns):
        return None
    return PlainCsv(path, list(names), columns, code[0], offset, block_bytes, path.stat().st_size,
                    lines=1 if header else 0)


def warm_up() -> None:
    """Load both kernels (a long-running producer does it before its first file)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "warm.csv"
        path.write_bytes(b"a,b\nx,1\n")
        plain = open_plain(path, None, True, 0, ",", ("a", "b"), 1 << 12)
        assert plain is not None and sum(batch.num_rows for batch, _ in plain) == 1
