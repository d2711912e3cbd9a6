"""The plain-CSV reader gives exactly pyarrow's columns, and hands every file or block that is not
plain to pyarrow from the right byte and line: the reference is the same source read by pyarrow alone."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from producer import csvplain
from producer.schema import load_schema, parse_schema
from producer.sources import CsvSource

ROOT = Path(__file__).resolve().parents[2]


def _schema(columns: list[str], **extra):
    return parse_schema({"header": True, "categorical": [c for c in columns if c != "label"],
                         "label": {"column": "label", "positive": ["1"], "negative": ["0"]}, **extra})


def _read(path: Path, schema, block: int, monkeypatch: pytest.MonkeyPatch | None = None, columns=None):
    """(table, chunk first rows, rejects, plain part used) of a CsvSource, pyarrow alone when patched."""
    used = []
    real = csvplain.open_plain

    def spy(*args):
        plain = real(*args)
        used.append(plain)
        return plain
    if monkeypatch is not None:
        monkeypatch.setattr(csvplain, "open_plain", lambda *a: None)
    else:
        csvplain.open_plain = spy
    try:
        source = CsvSource(path, schema, columns or schema.input_columns, block_bytes=block)
        chunks = list(source)
    finally:
        csvplain.open_plain = real
        if monkeypatch is not None:
            monkeypatch.undo()
    table = pa.Table.from_batches([c.batch for c in chunks]) if chunks else None
    rows = [c.first_row for c in chunks]
    assert rows == sorted(rows) and all(c.bytes_read <= path.stat().st_size for c in chunks)
    return table, rows, source.rejects.rows, [source.line_of(i) for i in range(sum(c.num_rows for c in chunks))], used


def _same(path: Path, schema, block: int, columns=None) -> tuple[pa.Table, object]:
    """Read ``path`` both ways; the tables, rejects and line numbers must match."""
    mine, _, rejects, lines, used = _read(path, schema, block, columns=columns)
    mp = pytest.MonkeyPatch()
    ref, _, ref_rejects, ref_lines, _ = _read(path, schema, max(block, 1 << 16), mp, columns=columns)
    assert mine is not None and ref is not None
    assert mine.equals(ref), (mine.slice(0, 3).to_pydict(), ref.slice(0, 3).to_pydict())
    assert all(pa.types.is_string(t) for t in mine.schema.types)
    assert rejects == ref_rejects
    assert lines == ref_lines
    return mine, used[0] if used else None


def _lines(n: int, fields: int = 4, sep: str = ",", end: str = "\n") -> str:
    rows = [sep.join(["label"] + [f"f{j}" for j in range(1, fields)])]
    rows += [sep.join([str(i % 2)] + [f"v{(i * 7 + j) % 13}" if j % 3 else "" for j in range(1, fields)])
             for i in range(n)]
    return end.join(rows) + end


def test_a_plain_file_is_read_by_the_kernels_block_by_block_as_pyarrow_reads_it(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(_lines(3000))
    table, plain = _same(path, _schema(["label", "f1", "f2", "f3"]), 1 << 10)
    assert plain is not None and plain.offset is None  # the whole file was plain
    assert table.num_rows == 3000 and table.column("f1")[0].as_py() == "v1" and table.column("f2")[1].as_py() == "v9"
    assert set(table.column("f3").to_pylist()) == {""} and table.column("f3").null_count == 0  # empty, not null


@pytest.mark.parametrize("end", ["\r\n", "\n"])
@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_delimiters_line_ends_and_a_missing_last_line_end(tmp_path, sep, end):
    text = _lines(500, sep=sep, end=end)
    path = tmp_path / "a.csv"
    path.write_text(text[:-len(end)], newline="")
    table, plain = _same(path, _schema(["label", "f1", "f2", "f3"], delimiter=sep), 1 << 9)
    assert plain is not None and plain.offset is None and table.num_rows == 500
    assert not any("\r" in v for col in table.columns for v in col.to_pylist())


def test_columns_are_given_in_the_asked_order_and_others_are_left_out(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(_lines(100, fields=6))
    table, _ = _same(path, _schema(["label", "f5", "f1"]), 1 << 9, columns=("f5", "label", "f1"))
    assert table.column_names == ["f5", "label", "f1"]


def test_a_line_longer_than_a_block_and_bytes_that_are_not_utf8_pass_through(tmp_path):
    path = tmp_path / "a.csv"
    long = "x" * 5000
    path.write_bytes(b"label,f1\n1,a\n0," + long.encode() + b"\n1,\xff\xfe\n0,b\n")
    table, plain = _same(path, _schema(["label", "f1"]), 1 << 10)
    assert plain.offset is None
    assert table.column("f1").slice(0, 2).to_pylist() == ["a", long]
    assert table.column("f1").chunk(0).buffers()[2] is not None


@pytest.mark.parametrize("bad,reason", [
    ('1,"quoted, with a comma",x,y\n', "quote"),
    ("\n", "empty line"),
    ("1,a\r,b,c\n", "lone CR"),
    ("1,a,b\n", "too few fields"),
    ("1,a,b,c,d\n", "too many fields"),
])
def test_a_block_that_is_not_plain_goes_with_the_rest_of_the_file_to_pyarrow(tmp_path, bad, reason):
    text = _lines(2000)
    head, tail = text[:len(text) // 2], text[len(text) // 2:]
    cut = head.rfind("\n") + 1
    path = tmp_path / "a.csv"
    path.write_text(text[:cut] + bad + head[cut:] + tail, newline="")
    _, plain = _same(path, _schema(["label", "f1", "f2", "f3"]), 1 << 10)
    assert plain is not None and 0 < plain.offset < len(text) // 2, reason  # plain up to that block
    lines = path.read_bytes()[:plain.offset].count(b"\n")
    assert plain.lines == lines


def test_a_rejected_row_after_the_handover_has_its_file_line(tmp_path):
    text = _lines(2000)
    rows = text.splitlines(keepends=True)
    rows.insert(1500, "1,only,three\n")
    path = tmp_path / "a.csv"
    path.write_text("".join(rows))
    mine, _, rejects, _, used = _read(path, _schema(["label", "f1", "f2", "f3"]), 1 << 10)
    assert used[0].offset is not None and rejects == [(1501, "wrong_column_count", "3 of 4 columns")]
    assert mine.num_rows == 2000


@pytest.mark.parametrize("start", ["\ufeff", '"label",f1,f2,f3\n'])
def test_a_file_whose_start_is_not_plain_is_read_by_pyarrow_alone(tmp_path, start):
    text = _lines(50)
    path = tmp_path / "a.csv"
    path.write_text(start + text if start.startswith("\ufeff") else start + text.split("\n", 1)[1])
    _, plain = _same(path, _schema(["label", "f1", "f2", "f3"]), 1 << 9)
    assert plain is None


def test_a_file_without_a_wanted_column_fails_as_before(tmp_path):
    from shared.errors import ConfigError

    path = tmp_path / "a.csv"
    path.write_text(_lines(5))
    with pytest.raises(ConfigError, match="cannot read a.csv as CSV"):
        list(CsvSource(path, _schema(["label", "nope"]), ("label", "nope")))


@pytest.mark.parametrize("name", ["adult.data", "adult.test"])
def test_the_adult_files_read_the_same_both_ways(adult_dir, name):
    """adult.data ends with an empty line; adult.test starts with a line of one field."""
    schema = load_schema(ROOT / "examples" / "adult.schema.toml")
    table, plain = _same(adult_dir / name, schema, 1 << 16)
    assert table.num_rows == (32561 if name == "adult.data" else 16281)
    assert plain is not None and (plain.offset == 0) == (name == "adult.test")


def test_warm_up_reads_a_file(tmp_path):
    csvplain.warm_up()  # asserts its own row count


def test_start_imports_the_plain_reader_on_the_callers_thread(tmp_path):
    """In a fresh interpreter: numba is imported by ``start()`` itself, never first on the reader's
    thread (a caller importing numba at the same time then saw it half-initialised and crashed);
    ``plain=False`` (the one-shot CLI, which parses while numba loads) imports nothing."""
    import subprocess
    import sys

    path = tmp_path / "a.csv"
    path.write_text(_lines(10))
    code = (
        "import sys, threading\n"
        "from producer.schema import parse_schema\n"
        "from producer.sources import CsvSource\n"
        "schema = parse_schema({'header': True, 'categorical': ['f1'], 'label': {'column': 'label', "
        "'positive': ['1'], 'negative': ['0']}})\n"
        f"for plain in (False, True):\n"
        f"    source = CsvSource({str(path)!r}, schema, ('f1', 'label'), plain=plain)\n"
        "    source.start()\n"
        "    print(plain, 'numba' in sys.modules, 'producer.csvplain' in sys.modules)\n"
        "    assert sum(c.num_rows for c in source) == 10\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split("\n")[:2] == ["False False False", "True True True"], out.stdout + out.stderr


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 200])
def test_the_branch_free_scan_lists_every_non_plain_byte_as_numpy_does(n):
    from producer.csvplain import _specials, byte_classes

    rng = np.random.default_rng(n)
    buf = rng.choice(np.frombuffer(b'ab,\n\r"x;1', np.uint8), n + 8)  # 8 bytes past n: never listed
    classes = byte_classes(ord(","))
    special = (classes != 0).astype(np.uint8)
    pos = np.full(n + 8, -7, dtype=np.int32)
    count = _specials(buf, n, special, pos)
    expect = np.flatnonzero(special[buf[:n]] == 1)
    assert count == expect.shape[0]
    assert (pos[:count] == expect).all()
