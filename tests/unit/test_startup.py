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
