"""shared.startup: the BLAS pin respects a user's choice; a quiet import leaves the collector as it was."""
from __future__ import annotations

import gc
import os
import sys

import pytest

from shared.startup import BLAS_THREAD_VARS, import_quietly, pin_blas_threads


def test_pin_blas_threads_sets_one_unless_already_chosen(monkeypatch):
    for var in BLAS_THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    pin_blas_threads()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"
    assert all(os.environ[v] == "1" for v in BLAS_THREAD_VARS if v != "OPENBLAS_NUM_THREADS")


def test_import_quietly_freezes_what_it_built_and_restores_the_collector(monkeypatch):
    monkeypatch.delitem(sys.modules, "json.tool", raising=False)
    frozen = gc.get_freeze_count()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            module = import_quietly("json.tool")
            assert module is sys.modules["json.tool"]
            assert gc.isenabled() is enabled
        assert gc.get_freeze_count() > frozen
    finally:
        gc.enable()
        gc.unfreeze()


def test_import_quietly_restores_the_collector_when_the_import_fails():
    gc.enable()
    try:
        with pytest.raises(ModuleNotFoundError):
            import_quietly("no_such_module_for_hashbridge")
    finally:
        gc.unfreeze()
    assert gc.isenabled()


def test_the_produce_command_imports_neither_numba_nor_librdkafka_before_its_reader_starts():
    """``hashbridge produce`` starts its CSV reader before the hash kernels (numba) and the Kafka
    client load, so their ~0.4 s of imports overlap the first blocks' parsing: importing the
    command's module must not pull them in (an innocent top-level import would undo it)."""
    import subprocess

    code = ("import sys, producer.__main__; "
            "print(sorted(m for m in ('numba', 'confluent_kafka', 'prometheus_client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_open_source_turns_the_readahead_into_blocks(tmp_path):
    from producer.schema import parse_schema
    from producer.sources import DEFAULT_BLOCK_BYTES, DEFAULT_READAHEAD_BYTES, open_source

    (tmp_path / "a.csv").write_text("x,label\na,1\n")
    schema = parse_schema({"header": True, "categorical": ["x"],
                           "label": {"column": "label", "positive": ["1"], "negative": ["0"]}})
    default = open_source(str(tmp_path / "a.csv"), schema, schema.input_columns)
    assert default.readahead_blocks == DEFAULT_READAHEAD_BYTES // DEFAULT_BLOCK_BYTES > 8
    small = open_source(str(tmp_path / "a.csv"), schema, schema.input_columns, readahead_bytes=1)
    assert small.readahead_blocks == 1


def test_skipping_numba_blas_probe_keeps_scipy_importable_and_kernels_working():
    """In a fresh interpreter: numba's array module loads without importing SciPy, the block is
    lifted afterwards (SciPy's BLAS still imports, where SciPy is installed), and a jitted
    kernel still runs; a second call does nothing."""
    import subprocess

    code = (
        "import sys\n"
        "from shared.startup import skip_numba_blas_probe\n"
        "assert skip_numba_blas_probe() is True\n"
        "assert 'scipy.linalg' not in sys.modules and 'numba.np.arraymath' in sys.modules\n"
        "assert 'scipy.linalg.cython_blas' not in sys.modules\n"
        "assert skip_numba_blas_probe() is False\n"
        "import numpy as np\n"
        "from trainer import kernels as K\n"
        "idx = np.arange(5, dtype=np.uint32)\n"
        "s = np.ones((8, 2), np.float32)\n"
        "assert K.gather_sum(s, idx) == 5.0\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('scipy') is not None:\n"
        "    import scipy.linalg.cython_blas\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
