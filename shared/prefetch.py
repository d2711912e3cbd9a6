"""Software prefetch for numba kernels: start loading a row of an array without waiting for it.

Both hot kernels are bound by cache misses at random rows (the trainer's model coordinates, the
producer's value-table slots); issuing the loads of upcoming rows early lets the misses overlap
the current row's work. ``llvm.prefetch`` is only a hint: it never faults, even out of bounds.
Under ``NUMBA_DISABLE_JIT`` (coverage runs) both are no-ops.
"""
from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic


def _make(rw: int) -> Any:
    @intrinsic
    def _prefetch(typingctx: Any, arr: Any, row: Any) -> Any:
        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            aty, rty = sig.args
            ary = context.make_array(aty)(context, builder, args[0])
            zero = context.get_constant(types.intp, 0)
            first = context.cast(builder, args[1], rty, types.intp)
            ptr = cgutils.get_item_pointer(context, builder, aty, ary, [first] + [zero] * (aty.ndim - 1),
                                           wraparound=False, boundscheck=False)
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
                ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8")
            # rw: 0 read, 1 write; locality 3 (keep in all levels); data cache
            builder.call(fn, [builder.bitcast(ptr, i8p), i32(rw), i32(3), i32(1)])
            return context.get_dummy_value()
        return types.void(arr, row), codegen
    return _prefetch


def _noop(arr: Any, row: int) -> None:  # NUMBA_DISABLE_JIT: a prefetch is only a hint
    pass


# prefetch_read(arr, row): arr[row] (its first element) will be read soon;
# prefetch_write(arr, row): it will be written soon (prefetchw: the line comes exclusive)
prefetch_read = _noop if config.DISABLE_JIT else _make(0)
prefetch_write = _noop if config.DISABLE_JIT else _make(1)
