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
    monkeypatch.setattr(cli, "reuse_large_buffers", lambda: calls.append("allocator") or True)
    monkeypatch.setattr(cli, "run", lambda args: calls.append("run") or 0)
    assert cli.main(["--schema", "s.toml", "--input", "x.csv"]) == 0
    assert calls == ["allocator", "run"]  # batch buffers are reused from the first batch on
