"""The packed file: a compressed model as exactly its accounted bytes plus a small JSON header.

    magic  b"FSEXTCMP"                 8 bytes
    header length                      uint64, little-endian
    sha256 of the header               32 bytes
    header                             UTF-8 JSON
    payload                            the tensors' blobs, back to back

No pickle anywhere: a file from a stranger can only be rejected, never run. The reader checks the
magic, both checksums, and every offset, length and count in the header against the payload before
it allocates anything, and turns any inconsistency into a ValueError.

Per tensor the header holds dtype, shape, layout and blob [offset, length] pairs, and for a quantized
tensor its scheme, granularity, group_size (0 unless granularity "group"; absent from files written
before group granularity existed, which read as 0) and group count. Blobs: "values"
(bit-packed k-bit codes, or raw little-endian values of the dtype), "index" (bitmap or bit-packed
delta fields, see sparse_index), "scales" (float32 per group), "zero_points" (uint8 per group,
asymmetric scheme only). Loading rebuilds each dense tensor bit for bit as compress() leaves it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from typing import Any

import numpy as np
import torch
from torch import nn

from . import bitpack, sparse_index
from .accounting import SCALE_BYTES, CompressionReport, TensorBytes, measure, report
from .atomic_files import write_atomically
from .methods import PRUNE_METHODS, QUANT_METHODS
from .plan import CompressedTensor, TensorPlan, compressed_copy, plan_compression
from .quantization import QuantizedTensor, group_count, group_width_problem
from .spec import GRANULARITIES, QUANTIZED_BITS, SCHEMES, CompressionSpec, group_size_problem
from .tensors import flat_numpy

# Both written into every packed file.
__version__ = "0.1.0"  # of the compression library
FORMAT_VERSION = 1
MAGIC = b"FSEXTCMP"
PREFIX = struct.Struct("<8sQ32s")
FORMAT = "fairseq_ext.compression.packed"
DTYPES = {
    name: getattr(torch, name)
    for name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
}
# Raw values travel as little-endian integers of the same width: one code path for every dtype.
_BIT_PATTERN = {1: (torch.uint8, "<u1"), 2: (torch.int16, "<i2"), 4: (torch.int32, "<i4"), 8: (torch.int64, "<i8")}


def save_compressed(
    path: str | os.PathLike, model: nn.Module, spec: CompressionSpec, masks: dict[str, torch.Tensor] | None = None,
    metadata: dict[str, Any] | None = None,
) -> CompressionReport:
    """Write what compress(model, spec) gives (or gave: a compressed model re-compresses to itself)
    without modifying the model; masks as for account(). Atomic: a temporary file in the same
    folder, renamed over path. Returns the byte report; the file is its total plus the header."""
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict or None, not {type(metadata).__name__}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata must be JSON-serialisable: {error}") from None
    plan = plan_compression(model, spec, masks)
    records, blobs, measured, offset = [], [], [], 0
    for item in plan.tensors:
        record, item_blobs, item_bytes = _encode(item, spec)
        for name, blob in item_blobs.items():
            record["blobs"][name] = [offset, len(blob)]
            offset += len(blob)
        records.append(record)
        blobs.extend(item_blobs.values())
        measured.append(item_bytes)
    result = report(plan, measured)
    payload_hash = hashlib.sha256()
    for blob in blobs:
        payload_hash.update(blob)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "method": _method(spec, pruned=bool(plan.masks)),
        "spec": spec.to_dict(),
        "achieved_sparsity": result.sparsity,
        "accounted_bytes": result.total_bytes,
        "fp32_bytes": result.fp32_bytes,
        "metadata": metadata,
        "payload_bytes": offset,
        "payload_sha256": payload_hash.hexdigest(),
        "tensors": records,
        "aliases": plan.aliases,
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    write_atomically(path, [PREFIX.pack(MAGIC, len(header_bytes), hashlib.sha256(header_bytes).digest()), header_bytes, *blobs])
    return result


def _method(spec: CompressionSpec, pruned: bool) -> dict[str, str]:
    """How the stored values were made, in words, for whoever reads the header."""
    pattern = f" {spec.prune_pattern}" if spec.prune_pattern != "unstructured" else ""
    return {
        "pruning": PRUNE_METHODS[spec.prune_method].description + pattern if pruned else "none",
        "quantization": QUANT_METHODS[spec.quant_method].description if spec.quantizes else "none",
    }


def _encode(item: TensorPlan, spec: CompressionSpec) -> tuple[dict, dict[str, bytes], TensorBytes]:
    touched = item.mask is not None or item.quantized
    values, compressed = compressed_copy(item, spec) if touched else (item.tensor.detach(), CompressedTensor(None, None, None))
    measured, positions = measure(item, values, spec, compressed.stored)
    record = {
        "name": item.key, "dtype": measured.dtype, "shape": list(measured.shape), "layout": measured.index_kind,
        "entries": measured.entries, "bits": measured.bits, "delta_bits": measured.delta_bits,
        "quantized": item.quantized, "blobs": {},
    }
    blobs = {}
    entries = None  # flat positions of the stored entries, fillers included; None: all of them
    if measured.index_kind == "bitmap":
        blobs["index"] = sparse_index.bitmap_encode(positions, measured.numel)
        entries = positions
    elif measured.index_kind == "delta":
        skips = sparse_index.delta_encode(positions, measured.numel, measured.delta_bits)
        blobs["index"] = bitpack.pack(skips, measured.delta_bits)
        entries = sparse_index.delta_decode(skips, measured.numel, measured.delta_bits)
    if item.quantized:
        record.update(
            scheme=spec.scheme, granularity=spec.granularity, group_size=spec.group_size, groups=measured.groups
        )
        blobs["values"] = bitpack.pack(_codes(values, entries, compressed, measured.groups), measured.bits)
        blobs["scales"] = compressed.scale.cpu().numpy().astype("<f4").tobytes()
        if spec.scheme == "asymmetric":
            blobs["zero_points"] = compressed.zero_point.cpu().numpy().astype(np.uint8).tobytes()
    else:
        raw = _bit_patterns(values)  # fillers are zeros: their bits are 0
        blobs["values"] = (raw if entries is None else raw[entries]).tobytes()
    written = {
        "values": len(blobs["values"]), "index": len(blobs.get("index", b"")),
        "scales": len(blobs.get("scales", b"")) + len(blobs.get("zero_points", b"")),
    }
    accounted = {"values": measured.value_bytes, "index": measured.index_bytes, "scales": measured.scale_bytes}
    if written != accounted:  # the file must be exactly the accounted bytes
        raise RuntimeError(f"{item.key}: wrote {written} bytes, accounted {accounted}")
    return record, blobs, measured


def _codes(values: torch.Tensor, entries: np.ndarray | None, compressed: CompressedTensor, groups: int) -> np.ndarray:
    """The code of each stored entry. Every value is an exact multiple n * scale of its group's
    scale, so value / scale is exactly n (and a filler's 0 gives the zero point)."""
    flat = flat_numpy(values.float())
    row_length = flat.size // groups
    scale = compressed.scale.cpu().numpy()
    zero_point = compressed.zero_point.cpu().numpy().astype(np.float32)
    if entries is None:
        codes = flat.reshape(groups, row_length) / scale[:, None]
        zero_point = zero_point[:, None]
    else:
        group = entries // row_length
        codes = flat[entries] / scale[group]
        zero_point = zero_point[group]
    np.rint(codes, out=codes)
    np.add(codes, zero_point, out=codes)
    return codes.astype(np.uint8).reshape(-1)


def _bit_patterns(values: torch.Tensor) -> np.ndarray:
    signed, little_endian = _BIT_PATTERN[values.element_size()]
    return values.detach().reshape(-1).cpu().view(signed).numpy().astype(little_endian, copy=False)


def load_compressed(
    path: str | os.PathLike, keep_quantized_bits: int = 0
) -> tuple[dict[str, torch.Tensor | StoredQuantized], dict[str, Any] | None, dict[str, Any]]:
    """(dense state_dict with every key, tied keys sharing one tensor; the caller's metadata; the
    header). Raises ValueError naming the problem for a truncated, altered or foreign file.
    ``keep_quantized_bits`` B > 0: the tensors quantized at <= B bits come back as StoredQuantized, which decode
    on demand (to their codes, or dense), so that a model built straight from codes never holds them all in float."""
    with open(path, "rb") as file:
        data = memoryview(file.read())
    try:
        header, payload = _verified_parts(data)
        state = {}
        for record in _checked_records(header, len(payload)):
            kept = record["quantized"] and record["bits"] <= keep_quantized_bits
            state[record["name"]] = StoredQuantized(record, payload) if kept else _decode(record, payload)
        aliases = _checked_aliases(header, state)
    except _Corrupt as problem:
        raise ValueError(f"{os.fspath(path)} is not a valid compressed model file: {problem}") from None
    state.update({alias: state[target] for alias, target in aliases.items()})
    return state, header["metadata"], header


class StoredQuantized:
    """A quantized tensor of a packed file, not decoded yet: ``quantized()`` gives its codes and grid (a
    QuantizedTensor, one byte per entry), ``dense()`` the tensor load_compressed would have given."""

    def __init__(self, record: dict, payload: memoryview):
        self._record, self._payload = record, payload
        self.shape = torch.Size(record["shape"])
        self.bits, self.granularity, self.group_size = record["bits"], record["granularity"], record.get("group_size", 0)

    def quantized(self) -> QuantizedTensor:
        record = self._record
        try:
            codes, scales, zero_points = _decoded_codes(record, self._payload, _stored_positions(record, self._payload))
        except _Corrupt as problem:
            raise ValueError(f"not a valid compressed model file: {problem}") from None
        return QuantizedTensor(
            codes=torch.from_numpy(codes).reshape(self.shape), scale=torch.from_numpy(scales[:, 0].copy()),
            zero_point=torch.from_numpy(zero_points[:, 0].astype(np.int32)), bits=record["bits"],
            scheme=record["scheme"], granularity=record["granularity"], group_size=record.get("group_size", 0),
            dtype=DTYPES[record["dtype"]],
        )

    def dense(self) -> torch.Tensor:
        try:
            return _decode(self._record, self._payload)
        except _Corrupt as problem:
            raise ValueError(f"not a valid compressed model file: {problem}") from None


class _Corrupt(Exception):
    pass


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise _Corrupt(problem)


def _verified_parts(data: memoryview) -> tuple[dict, memoryview]:
    _require(len(data) >= PREFIX.size and bytes(data[:8]) == MAGIC, "it does not start with the packed-format magic")
    _, header_length, header_digest = PREFIX.unpack(data[: PREFIX.size])
    _require(header_length <= len(data) - PREFIX.size, "truncated: the header runs past the end of the file")
    header_bytes = data[PREFIX.size : PREFIX.size + header_length]
    _require(hashlib.sha256(header_bytes).digest() == header_digest, "the header checksum does not match")
    try:
        header = json.loads(bytes(header_bytes))
    except (ValueError, RecursionError) as error:
        raise _Corrupt(f"the header is not JSON ({error})") from None
    _require(isinstance(header, dict) and header.get("format") == FORMAT, "the header names another format")
    _require(
        header.get("format_version") == FORMAT_VERSION,
        f"format version {header.get('format_version')!r}; this library reads version {FORMAT_VERSION}",
    )
    payload = data[PREFIX.size + header_length :]
    _require(header.get("payload_bytes") == len(payload), f"truncated or padded: payload is {len(payload)} bytes, header says {header.get('payload_bytes')!r}")
    _require(hashlib.sha256(payload).hexdigest() == header.get("payload_sha256"), "the payload checksum does not match")
    _require(isinstance(header.get("metadata"), (dict, type(None))), "metadata is not a JSON object")
    return header, payload


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _checked_records(header: dict, payload_size: int) -> list[dict]:
    records = header.get("tensors")
    _require(isinstance(records, list), "no tensor list")
    names = set()
    for i, record in enumerate(records):
        _require(isinstance(record, dict), f"tensor {i} is not an object")
        name = record.get("name")
        where = f"tensor {i} ({name!r})"
        _require(isinstance(name, str) and name not in names, f"{where}: missing or repeated name")
        names.add(name)
        _require(isinstance(record.get("dtype"), str) and record["dtype"] in DTYPES, f"{where}: unknown dtype")
        shape = record.get("shape")
        _require(isinstance(shape, list) and all(_is_count(n) for n in shape), f"{where}: bad shape")
        numel = math.prod(shape)
        layout, entries, bits = record.get("layout"), record.get("entries"), record.get("bits")
        _require(layout in ("dense", "bitmap", "delta"), f"{where}: unknown layout")
        _require(_is_count(entries) and (entries == numel if layout == "dense" else True), f"{where}: bad entry count")
        expected = {}
        if record.get("quantized") is True:
            _require(bits in QUANTIZED_BITS, f"{where}: unsupported bits")
            _require(record.get("scheme") in SCHEMES and record.get("granularity") in GRANULARITIES, f"{where}: bad scheme")
            granularity, group_size = record["granularity"], record.get("group_size", 0)
            _require(
                group_size_problem(granularity, group_size) is None
                and group_width_problem(name, tuple(shape), granularity, group_size) is None,
                f"{where}: bad group size",
            )
            groups = group_count(tuple(shape), granularity, group_size)
            _require(record.get("groups") == groups, f"{where}: bad group count")
            expected["scales"] = SCALE_BYTES * record["groups"]
            if record["scheme"] == "asymmetric":
                expected["zero_points"] = record["groups"]
        else:
            _require(record.get("quantized") is False, f"{where}: bad quantized flag")
            _require(bits == 8 * DTYPES[record["dtype"]].itemsize, f"{where}: bits do not match the dtype")
        expected["values"] = bitpack.packed_size(entries, bits)
        if layout == "bitmap":
            expected["index"] = bitpack.packed_size(numel, 1)
        elif layout == "delta":
            delta_bits = record.get("delta_bits")
            _require(delta_bits in range(1, sparse_index.MAX_DELTA_BITS + 1), f"{where}: bad delta field width")
            expected["index"] = bitpack.packed_size(entries, delta_bits)
        blobs = record.get("blobs")
        _require(isinstance(blobs, dict) and set(blobs) == set(expected), f"{where}: wrong set of blobs")
        for blob, length in expected.items():
            span = blobs[blob]
            _require(
                isinstance(span, list) and len(span) == 2 and all(_is_count(n) for n in span)
                and span[1] == length and span[0] + span[1] <= payload_size,
                f"{where}: blob {blob!r} is out of bounds or of the wrong length",
            )
    return records


def _blob(record: dict, payload: memoryview, name: str) -> memoryview:
    offset, length = record["blobs"][name]
    return payload[offset : offset + length]


def _stored_positions(record: dict, payload: memoryview) -> np.ndarray | None:
    """Flat positions of the stored entries; None: all of them (a dense layout)."""
    layout, entries, numel = record["layout"], record["entries"], math.prod(record["shape"])
    where = f"tensor {record['name']!r}"
    if layout == "dense":
        return None
    if layout == "bitmap":
        try:
            positions = sparse_index.bitmap_decode(_blob(record, payload, "index"), numel)
        except ValueError as error:
            raise _Corrupt(f"{where}: {error}") from None
        _require(positions.size == entries, f"{where}: the bitmap marks {positions.size} values, not {entries}")
        return positions
    skips = bitpack.unpack(_blob(record, payload, "index"), record["delta_bits"], entries)
    try:
        return sparse_index.delta_decode(skips, numel, record["delta_bits"])
    except ValueError as error:
        raise _Corrupt(f"{where}: {error}") from None


def _decoded_codes(record: dict, payload: memoryview, positions: np.ndarray | None):
    """(uint8 codes (groups, entries per group), float32 scales (groups, 1), uint8 zero points (groups, 1)) of a
    quantized record; unstored entries hold their group's zero code."""
    codes = bitpack.unpack(_blob(record, payload, "values"), record["bits"], record["entries"])
    scales = np.frombuffer(_blob(record, payload, "scales"), dtype="<f4").astype(np.float32)[:, None]
    if record["scheme"] == "asymmetric":
        zero_points = np.frombuffer(_blob(record, payload, "zero_points"), dtype=np.uint8)
        _require(bool(np.all(zero_points < 2 ** record["bits"])), f"tensor {record['name']!r}: zero point out of range")
    else:
        zero_points = np.full(record["groups"], 2 ** (record["bits"] - 1), dtype=np.uint8)
    zero_points = zero_points[:, None]
    groups = np.empty((record["groups"], math.prod(record["shape"]) // record["groups"]), dtype=np.uint8)
    groups[:] = zero_points
    groups.reshape(-1)[positions if positions is not None else slice(None)] = codes
    return groups, scales, zero_points


def _decode(record: dict, payload: memoryview) -> torch.Tensor:
    shape = record["shape"]
    numel = math.prod(shape)
    positions = _stored_positions(record, payload)
    dtype = DTYPES[record["dtype"]]
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    if record["quantized"]:
        codes, scales, zero_points = _decoded_codes(record, payload, positions)
        zero_points = zero_points.astype(np.float32)
        # The arithmetic of dequantize(), in float32, gives the same bits as the compressed model (+0.0 where
        # nothing is stored: an unstored entry holds its group's zero code).
        groups = codes.astype(np.float32)
        np.subtract(groups, zero_points, out=groups)
        np.multiply(groups, scales, out=groups)
        return torch.from_numpy(groups).reshape(shape).to(dtype)
    signed, little_endian = _BIT_PATTERN[dtype.itemsize]
    entry_raw = np.frombuffer(_blob(record, payload, "values"), dtype=little_endian).astype(little_endian[1:])
    if positions is None:
        raw = entry_raw
    else:
        raw = np.zeros(numel, dtype=entry_raw.dtype)
        raw[positions] = entry_raw
    return torch.from_numpy(raw).view(dtype).reshape(shape)


def _checked_aliases(header: dict, state: dict) -> dict[str, str]:
    aliases = header.get("aliases")
    _require(isinstance(aliases, dict), "no alias table")
    for alias, target in aliases.items():
        _require(alias not in state and isinstance(target, str) and target in state, f"bad alias {alias!r} -> {target!r}")
    return aliases
