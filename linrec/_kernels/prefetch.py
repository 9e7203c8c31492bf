"""Software prefetch of factor rows for the sparse gather loops.

A row solver visits its entries' factor rows (``other[indices[idx]]``) in the data's order,
which is random over a table far larger than the core's cache (100k items x 256 float32 is
100 MB). Each visit then waits for memory: measured on the synthetic 10M matrix at d = 256,
the gather pass of the CG kernel cost 250 ns per entry against 76 ns when the same rows were
cache-resident. The hardware prefetcher cannot guess the next row, but the kernel knows it
``PREFETCH_AHEAD`` entries in advance: :func:`prefetch_entry` asks the CPU to start loading it
(LLVM's ``llvm.prefetch``, one request per 64-byte line). A prefetch is only a hint: it
changes no value and never faults, so results are bit-for-bit those without it.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["PREFETCH_AHEAD", "prefetch_entry", "prefetch_row"]

# Entries ahead of the one being processed whose rows are requested. Measured on the
# synthetic 10M matrix, CG kernel with 3 steps, 2 threads, best of 3 runs: no prefetch (one
# run) 0.65 s (d = 64) / 2.35 s (d = 256); 8 ahead 0.31 / 1.65 s; 12 ahead 0.30 / 1.45 s;
# 16 ahead 0.34 / 1.47 s; 32 ahead was slower again at d = 64 (0.53 s).
PREFETCH_AHEAD = 12

_CACHE_LINE = 64


@intrinsic
def prefetch_row(typingctx, array, row):
    """Request every cache line of ``array[row]`` (a 2-D array) for reading.

    Compiles to ``llvm.prefetch`` calls (read, keep in all cache levels); no value changes.
    Only C-contiguous arrays are prefetched (their rows are contiguous); for other layouts
    the call compiles to nothing.
    """
    if not (isinstance(array, types.Array) and array.ndim == 2):
        return None
    if not isinstance(row, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        if array_type.layout != "C":
            return context.get_dummy_value()
        arr = context.make_array(array_type)(context, builder, args[0])
        row_index = context.cast(builder, args[1], signature.args[1], types.intp)
        zero = context.get_constant(types.intp, 0)
        first = cgutils.get_item_pointer(context, builder, array_type, arr, [row_index, zero])
        byte_ptr = ir.IntType(8).as_pointer()
        base = builder.bitcast(first, byte_ptr)
        n_columns = cgutils.unpack_tuple(builder, arr.shape, 2)[1]
        item_bytes = context.get_constant(types.intp, array_type.dtype.bitwidth // 8)
        row_bytes = builder.mul(n_columns, item_bytes)
        i32 = ir.IntType(32)
        prefetch_type = ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        prefetch = cgutils.get_or_insert_function(
            builder.module, prefetch_type, "llvm.prefetch.p0i8"
        )
        line = context.get_constant(types.intp, _CACHE_LINE)
        with cgutils.for_range_slice(builder, zero, row_bytes, line, intp=row_bytes.type) as (
            offset,
            _,
        ):
            address = builder.gep(base, [offset])
            # read (0), keep in every level (3), data cache (1)
            builder.call(
                prefetch, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
            )
        return context.get_dummy_value()

    return types.void(array, row), codegen


@njit(cache=True)
def prefetch_entry(other, indices, position, limit):
    """Prefetch ``other[indices[position]]`` if ``position < limit`` (else do nothing)."""
    if position < limit:
        prefetch_row(other, indices[position])
