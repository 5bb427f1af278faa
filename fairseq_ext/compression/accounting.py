"""Bytes of the compressed representation, tensor by tensor: exactly what save_compressed writes,
less the file header.

A tensor that neither pruning nor quantization touches is stored at its dtype. A touched one stores
values (k-bit codes when quantized, else its dtype) plus, when quantized, a float32 scale per group
and, for the asymmetric scheme, a one-byte zero-point per group. A pruned tensor may also store only
its nonzero values, with a sparse index: whichever of no index (all values), a bitmap, or a delta
index (the best field width) is cheapest. Each part is packed to a whole number of bytes. A tensor
reached under several names (tied embeddings) is counted once.

account() measures a model as it would be compressed; compress() compresses it in place and measures it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .bitpack import packed_size
from .plan import CompressionPlan, TensorPlan, compress_tensor_, compressed_copy, plan_compression
from .quantization import group_count
from .sparse_index import cheapest_delta, filler_counts, zero_runs
from .spec import CompressionSpec
from .tensors import bit_patterns

SCALE_BYTES = 4  # float32
ZERO_POINT_BYTES = 1  # codes have at most 8 bits


@dataclass
class TensorBytes:
    name: str
    shape: tuple[int, ...]
    numel: int
    nonzero: int
    bits: int  # per stored value
    value_bytes: int
    scale_bytes: int
    index_bytes: int
    index_kind: str  # "dense" (every value, no index), "bitmap" or "delta"
    total_bytes: int
    dtype: str
    quantized: bool
    entries: int  # values stored: numel when dense, nonzero for a bitmap, plus fillers for delta
    delta_bits: int = 0  # field width of a delta index
    groups: int = 0  # quantization groups (scales)


@dataclass
class CompressionReport:
    tensors: list[TensorBytes]
    total_bytes: int
    fp32_bytes: int
    ratio: float  # fp32_bytes / total_bytes
    sparsity: float  # pruned fraction of the prunable weights
    bits: int
    aliases: dict[str, str] = field(default_factory=dict)

    def totals_line(self) -> str:
        return (
            f"sparsity {self.sparsity:.3f} bits {self.bits} compressed {self.total_bytes / 1e6:.2f} MB "
            f"(fp32 {self.fp32_bytes / 1e6:.1f} MB, {self.ratio:.1f}x)"
        )

    def table(self) -> str:
        header = ("tensor", "shape", "nonzero", "bits", "index", "values B", "scales B", "index B", "total B")
        rows = [
            (
                t.name, "x".join(map(str, t.shape)) or "scalar", f"{t.nonzero}/{t.numel}", str(t.bits),
                t.index_kind + (f"/{t.delta_bits}b" if t.index_kind == "delta" else ""),
                str(t.value_bytes), str(t.scale_bytes), str(t.index_bytes), str(t.total_bytes),
            )
            for t in self.tensors
        ]
        rows.append(("total", "", "", "", "", "", "", "", str(self.total_bytes)))
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                 for row in [header, *rows]]
        return "\n".join(lines + [self.totals_line()])


def measure(item: TensorPlan, values: torch.Tensor, spec: CompressionSpec, stored: np.ndarray | None) -> tuple[TensorBytes, np.ndarray | None]:
    """Bytes of one tensor whose compressed values are `values`, `stored` being the positions of
    their nonzeros when the tensor is pruned (None otherwise: only pruned tensors get a sparse
    layout). Returns the positions a sparse layout stores, None for a dense layout."""
    numel = values.numel()
    bits = spec.bits if item.quantized else 8 * values.element_size()
    groups = group_count(tuple(values.shape), spec.granularity, spec.group_size) if item.quantized else 0
    scale_bytes = groups * (SCALE_BYTES + (ZERO_POINT_BYTES if spec.scheme == "asymmetric" else 0))
    nonzero = stored.size if stored is not None else int(np.count_nonzero(bit_patterns(values)))

    # (index kind, entries, delta bits, value bytes, index bytes); earlier kinds win ties.
    layouts = [("dense", numel, 0, packed_size(numel, bits), 0)]
    if stored is not None:
        layouts.append(("bitmap", nonzero, 0, packed_size(nonzero, bits), packed_size(numel, 1)))
        no_filler_bound = packed_size(nonzero, 1) + packed_size(nonzero, bits)
        if no_filler_bound < min(layout[3] + layout[4] for layout in layouts):
            delta_bits, entries, _ = cheapest_delta(nonzero, filler_counts(zero_runs(stored, numel)), bits)
            layouts.append(("delta", entries, delta_bits, packed_size(entries, bits), packed_size(entries, delta_bits)))
    kind, entries, delta_bits, value_bytes, index_bytes = min(layouts, key=lambda layout: layout[3] + layout[4])
    measured = TensorBytes(
        name=item.key, shape=tuple(values.shape), numel=numel, nonzero=nonzero, bits=bits,
        value_bytes=value_bytes, scale_bytes=scale_bytes, index_bytes=index_bytes, index_kind=kind,
        total_bytes=value_bytes + scale_bytes + index_bytes, dtype=str(values.dtype).removeprefix("torch."),
        quantized=item.quantized, entries=entries, delta_bits=delta_bits, groups=groups,
    )
    return measured, (stored if kind != "dense" else None)


def report(plan: CompressionPlan, measured: list[TensorBytes]) -> CompressionReport:
    total = sum(t.total_bytes for t in measured)
    fp32 = sum(4 * t.numel for t in measured)
    masks = list(plan.masks.values())
    prunable = sum(m.numel() for m in masks)
    kept = sum(int(np.count_nonzero(m.reshape(-1).cpu().numpy())) for m in masks)
    return CompressionReport(
        tensors=measured, total_bytes=total, fp32_bytes=fp32, ratio=fp32 / total if total else float("inf"),
        sparsity=(prunable - kept) / prunable if prunable else 0.0, bits=plan.spec.bits, aliases=dict(plan.aliases),
    )


def account(model: nn.Module, spec: CompressionSpec, masks: dict[str, torch.Tensor] | None = None) -> CompressionReport:
    """The report compress(model, spec) would return, computed tensor by tensor on copies (the model
    is not modified; extra memory is one tensor at a time). Without masks, a pruning spec derives
    magnitude masks; on a model already compressed with the same spec that reproduces its masks.
    Unlike compress and save_compressed it accepts half-precision weights (quantized in float32)."""
    plan = plan_compression(model, spec, masks, exact=False)
    measured = []
    for item in plan.tensors:
        values, compressed = compressed_copy(item, spec)
        measured.append(measure(item, values, spec, compressed.stored)[0])
    return report(plan, measured)


def compress(
    model: nn.Module, spec: CompressionSpec, masks: dict[str, torch.Tensor] | None = None
) -> tuple[CompressionReport, dict[str, torch.Tensor]]:
    """Prune (spec.sparsity, spec.scope, or the given masks, e.g. a calibrated method's) and
    fake-quantize (spec.bits, ...) the model's weights in place; returns the byte report and the
    keep masks by parameter name ({} without pruning), which keep pruned weights at zero during
    finetuning (apply_masks) and go to save_compressed.
    Extra memory: the masks (one byte per prunable weight) and one tensor's worth of scratch."""
    plan = plan_compression(model, spec, masks)
    measured = []
    for item in plan.tensors:
        compressed = compress_tensor_(item.tensor, item.mask, spec if item.quantized else None)
        measured.append(measure(item, item.tensor, spec, compressed.stored)[0])
    return report(plan, measured), plan.masks
