"""Unaligned 8-byte loads and stores for numba kernels over byte arrays.

The producer's kernels read and copy short values a word at a time (the value tables' keys, the
plain-CSV reader's column copies); a value starts at any byte, so the access is unaligned, which
x86 does at full speed. The caller keeps ``at + 8`` inside the array. Under ``NUMBA_DISABLE_JIT``
(coverage runs) both are plain Python over byte slices.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import config, types
from numba.extending import intrinsic


@intrinsic
def _load64_jit(typingctx: Any, data: Any, at: Any) -> Any:
    """The 8 bytes at ``data[at]`` as one native u64."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(arr.data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)
    return types.uint64(data, at), codegen


@intrinsic
def _store64_jit(typingctx: Any, data: Any, at: Any, value: Any) -> Any:
    """``value`` as the 8 bytes at ``data[at]``."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(arr.data, [args[1]]), ir.IntType(64).as_pointer())
        builder.store(args[2], ptr, align=1)
        return context.get_dummy_value()
    return types.void(data, at, value), codegen


def _load64_py(data: np.ndarray, at: int) -> np.uint64:
    return np.uint64(int.from_bytes(data[at:at + 8].tobytes(), "little"))


def _store64_py(data: np.ndarray, at: int, value: np.uint64) -> None:
    data[at:at + 8] = np.frombuffer(int(value).to_bytes(8, "little"), dtype=np.uint8)


load64 = _load64_py if config.DISABLE_JIT else _load64_jit
store64 = _store64_py if config.DISABLE_JIT else _store64_jit
