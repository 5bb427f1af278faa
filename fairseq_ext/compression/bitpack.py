"""Bit-packing of unsigned integers, least significant bit first, into bytes.

Value i occupies bits [i * bits, (i + 1) * bits) of the stream, bit j of the stream being bit j % 8
of byte j // 8. Work goes in chunks of whole bytes so the one-byte-per-bit intermediate stays small.
"""

from __future__ import annotations

import numpy as np

VALUES_PER_STEP = 1 << 20  # a multiple of 8, so every step ends on a byte boundary


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def _container(bits: int) -> np.dtype:
    return np.dtype("<u1" if bits <= 8 else "<u2" if bits <= 16 else "<u4")


def pack(values: np.ndarray, bits: int) -> bytes:
    """values: non-negative integers below 2**bits (1 <= bits <= 32)."""
    values = np.asarray(values).reshape(-1)
    if values.size and (values.min() < 0 or int(values.max()) >> bits):
        raise ValueError(f"values do not fit in {bits} bits")
    container = _container(bits)
    if bits == 8 * container.itemsize:
        return values.astype(container).tobytes()
    out = bytearray()
    for start in range(0, values.size, VALUES_PER_STEP):
        chunk = values[start : start + VALUES_PER_STEP].astype(container)
        stream = np.unpackbits(chunk.view(np.uint8), bitorder="little").reshape(chunk.size, -1)[:, :bits]
        out += np.packbits(stream.reshape(-1), bitorder="little").tobytes()
    return bytes(out)


def unpack(data: bytes | memoryview, bits: int, count: int) -> np.ndarray:
    """The inverse of pack; data must hold exactly packed_size(count, bits) bytes."""
    if len(data) != packed_size(count, bits):
        raise ValueError(f"{len(data)} bytes cannot hold exactly {count} values of {bits} bits")
    container = _container(bits)
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 8 * container.itemsize:
        return raw.view(container).astype(container.newbyteorder("="))
    values = np.empty(count, dtype=container.newbyteorder("="))
    width = 8 * container.itemsize
    for start in range(0, count, VALUES_PER_STEP):
        size = min(VALUES_PER_STEP, count - start)
        stream = np.unpackbits(raw[start * bits // 8 :], count=size * bits, bitorder="little").reshape(size, bits)
        padded = np.zeros((size, width), dtype=np.uint8)
        padded[:, :bits] = stream
        values[start : start + size] = np.packbits(padded.reshape(-1), bitorder="little").view(container)
    return values
