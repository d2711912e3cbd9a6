"""Large freed buffers are reused without page faults once the allocator is set (a child process,
so the test process keeps glibc's defaults)."""
from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = r"""
import ctypes, ctypes.util, resource, sys
from shared.allocator import reuse_large_buffers
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "set":
    assert reuse_large_buffers()
size = 48 << 20  # a fetch response's size: above glibc's default mmap threshold (<= 32 MiB)
def touch():
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_reused_buffers_do_not_fault_again() -> None:
    pages = 5 * (48 << 20) // 4096
    assert _faults("default") > pages // 2  # each fresh mmap faults its pages in again
    assert _faults("set") < pages // 50  # the freed buffer is reused from the heap


def test_the_produce_command_sets_the_allocator_before_it_runs(monkeypatch) -> None:
    import producer.__main__ as cli

    calls: list[str] = []
    monkeypatch.setattr(cli, "reuse_large_buffers", lambda **kw: calls.append(f"allocator {kw}") or True)
    monkeypatch.setattr(cli, "run", lambda args: calls.append("run") or 0)
    assert cli.main(["--schema", "s.toml", "--input", "x.csv"]) == 0
    # batch buffers are reused from the first batch on, from one heap for every thread
    assert calls == ["allocator {'one_arena': True}", "run"]


PRETOUCH_CHILD = r"""
import ctypes, ctypes.util, resource, sys, threading
from shared.allocator import pretouch, reuse_large_buffers
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
assert reuse_large_buffers(one_arena=True)
if sys.argv[1] == "pretouch":
    assert pretouch(96 << 20)
faults = []
def first_buffers():  # on another thread, as the producer's CSV reader allocates its batches
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ptrs = [libc.malloc(8 << 20) for _ in range(8)]
    for p in ptrs:
        ctypes.memset(p, 1, 8 << 20)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    for p in ptrs:
        libc.free(p)
t = threading.Thread(target=first_buffers)
t.start(); t.join()
print(faults[0])
"""


def _first_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PRETOUCH_CHILD, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_pretouched_heap_serves_another_threads_first_buffers_without_faults() -> None:
    pages = 64 * (1 << 20) // 4096
    assert _first_faults("cold") > pages // 2  # fresh heap: every page faults on first touch
    assert _first_faults("pretouch") < pages // 20


def test_pretouch_refuses_nothing_to_do() -> None:
    from shared.allocator import pretouch

    assert not pretouch(0)


def test_a_watching_producer_pretouches_before_it_watches(monkeypatch, tmp_path) -> None:
    import signal
    from types import SimpleNamespace

    import producer.__main__ as cli
    import producer.spool as spool

    calls: list[object] = []

    class Spool:
        def __init__(self, *args: object) -> None:
            self.on_stop = None

        def run(self, idle_exit: float | None = None) -> SimpleNamespace:
            calls.append("watch")
            return SimpleNamespace(files_done=0, records_acked=0, files_failed=0)

        def stop(self) -> None:
            pass

    monkeypatch.setattr(cli, "pretouch", lambda n: calls.append(n) or True)
    monkeypatch.setattr(spool, "warm_up", lambda *a: calls.append("warm"))
    monkeypatch.setattr(spool, "SpoolService", Spool)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for extra, mib in (([], cli.WATCH_PRETOUCH_MIB), (["--pretouch-mib", "0"], 0)):
            calls.clear()
            args = cli.build_parser().parse_args(["--schema", "s.toml", "--watch", str(tmp_path), *extra])
            assert cli._watch(args, None, None, None, None, None, None) == 0
            assert calls == ["warm", mib << 20, "watch"]  # touched before the first file can land
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
