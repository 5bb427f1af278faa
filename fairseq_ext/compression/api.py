"""compress(): one-shot magnitude pruning then fake quantization of a model, in place."""

from __future__ import annotations

import torch
from torch import nn

from .accounting import CompressionReport, measure, report
from .plan import compress_tensor_, plan_compression
from .spec import CompressionSpec


def compress(model: nn.Module, spec: CompressionSpec) -> tuple[CompressionReport, dict[str, torch.Tensor]]:
    """Prune (spec.sparsity, spec.scope) and fake-quantize (spec.bits, ...) the model's weights in
    place; returns the byte report and the keep masks by parameter name ({} without pruning), which
    keep pruned weights at zero during finetuning (apply_masks) and go to save_compressed.
    Extra memory: the masks (one byte per prunable weight) and one tensor's worth of scratch."""
    plan = plan_compression(model, spec)
    measured = []
    for item in plan.tensors:
        compressed = compress_tensor_(item.tensor, item.mask, spec if item.quantized else None)
        measured.append(measure(item, item.tensor, spec, compressed.stored)[0])
    return report(plan, measured), plan.masks
