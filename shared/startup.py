"""Process start-up of the services: what to settle before the heavy imports.

Why: a producer run over the benchmark's 900k-row file spent ~2 s in all, and a third of that was
start-up. Two parts of it were not work at all: the cyclic garbage collector walked the tens of
thousands of objects that importing numba, pyarrow and librdkafka's wrappers create, again and
again while they were created (~0.3 s, `gc_collect_main` in a perf profile), and an idle
OpenBLAS thread pool, which no service uses, spun on the second core. This module imports
nothing heavy itself, so it can run before numpy is loaded.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
from types import ModuleType
from typing import Iterator

BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def pin_blas_threads() -> None:
    """One BLAS thread unless the user chose otherwise: the services' kernels are numba, not BLAS,
    and a BLAS pool's spinning threads take the core that librdkafka and the broker need. Takes
    effect only before numpy is first imported."""
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")


@contextlib.contextmanager
def quiet_imports() -> Iterator[None]:
    """Import inside with the collector off, then freeze what the imports built: those objects
    live as long as the process, so later collections need not walk them either (the scorer's
    full collections took 50-130 ms before, a request-latency tail)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def import_quietly(name: str) -> ModuleType:
    """Import ``name`` inside :func:`quiet_imports`."""
    with quiet_imports():
        return importlib.import_module(name)


_SCIPY_BLAS = "scipy.linalg.cython_blas"


def skip_numba_blas_probe() -> bool:
    """Load numba's array implementations without its SciPy probe; True if the probe was skipped.

    At its first compile (or cache load) numba imports ``numba.np.arraymath``, which imports
    ``scipy.linalg`` (~0.2 s, when SciPy is installed, as it is with the benchmark extras) only to
    learn whether
    ``np.dot`` in jitted code may call BLAS. No hashbridge kernel calls ``np.dot``; the import sat
    on the producer's critical path (0.93x its wall time without it, 14 paired runs). The probe's
    import is made to fail for that one import and is then allowed again, so SciPy itself stays
    importable; numba-compiled ``np.dot`` in this process then runs numba's own loops. Call it
    before the first jitted call; later it does nothing."""
    if "numba.np.arraymath" in sys.modules or _SCIPY_BLAS in sys.modules:
        return False  # too late, or SciPy's BLAS is loaded already (the probe then costs nothing)
    sys.modules[_SCIPY_BLAS] = None  # type: ignore[assignment]  # the import fails at once
    try:
        importlib.import_module("numba.np.arraymath")
    finally:
        if _SCIPY_BLAS in sys.modules and sys.modules[_SCIPY_BLAS] is None:
            del sys.modules[_SCIPY_BLAS]
    return True
