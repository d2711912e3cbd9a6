"""Huge pages: the trainer's shared block asks for them, and what the OS grants is reported."""
from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

from shared import hugepages
from trainer import shm as S


def _thp_mode() -> str:
    text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    return text[text.index("[") + 1:text.index("]")]


def _vm_flags(a: np.ndarray) -> set[str]:
    """The VmFlags of the mapping holding ``a``'s first byte ("hg": madvise(MADV_HUGEPAGE))."""
    addr, inside = a.__array_interface__["data"][0], False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(None, 1)[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= addr < hi
        elif inside and head == "VmFlags:":
            return set(line.split()[1:])
    raise AssertionError("no mapping holds the array")


def test_advise_marks_the_mapping_and_the_grant_is_reported() -> None:
    buf = mmap.mmap(-1, 8 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    a = np.frombuffer(buf, np.uint8)
    assert hugepages.huge_bytes(a) == 0  # nothing touched yet
    assert hugepages.advise(buf)
    assert "hg" in _vm_flags(a)
    a[::4096] = 1
    granted = hugepages.huge_bytes(a)
    assert granted % hugepages.HUGE == 0 and granted <= a.nbytes
    if _thp_mode() in ("madvise", "always"):
        assert granted >= 2 * hugepages.HUGE  # an 8 MiB mapping holds at least 3 aligned 2 MiB pages
    else:
        assert granted == 0


def test_small_regions_are_not_advised() -> None:
    buf = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    assert not hugepages.advise(buf)
    assert "hg" not in _vm_flags(np.frombuffer(buf, np.uint8))


def test_huge_bytes_spans_every_mapping_under_the_array() -> None:
    """numpy's own madvise of a large malloc block splits its first page off into a mapping of its
    own; the count must cover every mapping under the array, not only the first byte's."""
    buf = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    a = np.frombuffer(buf, np.uint8)
    assert hugepages.advise(buf, mmap.PAGESIZE)  # as numpy does: all but the first page
    assert "hg" not in _vm_flags(a)  # the first byte's mapping is the unadvised page
    a[::4096] = 1
    if _thp_mode() in ("madvise", "always"):
        assert hugepages.huge_bytes(a) >= 4 * hugepages.HUGE  # >= 6 aligned 2 MiB ranges are advised
    else:
        assert hugepages.huge_bytes(a) == 0


def test_the_trainer_block_asks_for_huge_pages_over_its_state() -> None:
    """Granted only where /dev/shm is mounted huge=advise or always (then tmpfs also places the
    mapping at a 2 MiB boundary, which a PMD mapping needs); asked for everywhere."""
    allowed = hugepages.tmpfs_mode(str(S.SHM_DIR)) in ("advise", "always", "within_size")
    with S.SharedState(bits=20, workers=2, partitions=4) as arrays:
        assert arrays.state.nbytes == S.ShmHandle("x", 20, 2, 4).state_bytes
        assert "hg" in _vm_flags(arrays.state)
        with S.Attached(S.ShmHandle(arrays.handle.name, 20, 2, 4)) as worker_view:
            assert "hg" in _vm_flags(worker_view.state)
            worker_view.state[:] = 1.0
        assert np.all(arrays.state == 1.0)  # the owner's mapping faults the worker's pages in
        granted = hugepages.huge_bytes(arrays.state)
        if allowed:
            assert arrays.state.__array_interface__["data"][0] % hugepages.HUGE == 0
            assert granted == arrays.state.nbytes
        else:
            assert granted == 0


def test_tmpfs_mode_reads_the_mount_table() -> None:
    assert hugepages.tmpfs_mode("/no/such/mount") == "none"
    assert hugepages.tmpfs_mode(str(S.SHM_DIR)) in ("never", "advise", "always", "within_size", "deny", "force")
