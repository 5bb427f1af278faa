"""Where the stored values of a sparse tensor go: a bitmap or a delta index, and what each costs.

Bitmap: one bit per entry of the tensor, set where a value is stored.

Delta index (Deep Compression, Han et al. 2016): each stored value carries a b-bit field `skip`,
the number of zeros between it and the previous stored value; it lands at previous + skip + 1. A
run of r zeros longer than a field can say is broken by r >> b filler entries, each one a stored
zero with skip 2**b - 1, so it covers 2**b positions. Runs after the last value get fillers too,
which leaves fewer than 2**b trailing zeros: a decoder can bound the tensor size by the stream.
"""

from __future__ import annotations

import numpy as np

from .bitpack import packed_size

MAX_DELTA_BITS = 16


def zero_runs(positions: np.ndarray, numel: int) -> np.ndarray:
    """Zeros before each stored position, then the zeros after the last one."""
    bounds = np.concatenate(([-1], positions, [numel]))
    return np.diff(bounds) - 1


def filler_counts(runs: np.ndarray) -> list[int]:
    """Filler entries a delta index with b-bit fields needs, for b = 1 .. MAX_DELTA_BITS (index b - 1):
    the sum of run >> b, taken over a histogram of run lengths (no longer than the tensor)."""
    histogram = np.bincount(runs)
    lengths = np.arange(histogram.size)
    return [int(histogram @ (lengths >> b)) for b in range(1, MAX_DELTA_BITS + 1)]


def cheapest_delta(stored: int, fillers: list[int], value_bits: int) -> tuple[int, int, int]:
    """(field bits, entries, bytes) of the cheapest delta index, index and values together.
    Smaller fields win ties."""
    best = None
    for bits, filler in enumerate(fillers, start=1):
        entries = stored + filler
        cost = packed_size(entries, bits) + packed_size(entries, value_bits)
        if best is None or cost < best[2]:
            best = (bits, entries, cost)
    return best


def delta_encode(positions: np.ndarray, numel: int, bits: int) -> np.ndarray:
    """The skip field of every entry, fillers included, for values stored at sorted positions."""
    runs = zero_runs(positions, numel)
    fillers = np.right_shift(runs, bits)
    skips = np.full(int(fillers.sum()) + positions.size, (1 << bits) - 1, dtype=np.int64)
    value_entries = np.cumsum(fillers[:-1] + 1) - 1
    skips[value_entries] = runs[:-1] & ((1 << bits) - 1)
    return skips


def delta_decode(skips: np.ndarray, numel: int, bits: int) -> np.ndarray:
    """Position of every entry (fillers included), after checking the stream fits numel exactly."""
    positions = np.cumsum(skips.astype(np.int64) + 1) - 1
    end = int(positions[-1]) + 1 if positions.size else 0
    if end > numel or numel - end >= (1 << bits):
        raise ValueError(f"delta index covers {end} positions, which does not fit a tensor of {numel}")
    return positions


def bitmap_encode(positions: np.ndarray, numel: int) -> bytes:
    bitmap = np.zeros(numel, dtype=bool)
    bitmap[positions] = True
    return np.packbits(bitmap, bitorder="little").tobytes()


def bitmap_decode(data: bytes | memoryview, numel: int) -> np.ndarray:
    if len(data) != packed_size(numel, 1):
        raise ValueError(f"a bitmap of {numel} entries takes {packed_size(numel, 1)} bytes, not {len(data)}")
    raw = np.frombuffer(data, dtype=np.uint8)
    if numel % 8 and raw[-1] >> (numel % 8):
        raise ValueError("bitmap has bits set past the end of the tensor")
    return np.flatnonzero(np.unpackbits(raw, count=numel, bitorder="little"))
