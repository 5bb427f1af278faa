"""For every distinct tensor of a model's state: is it pruned (with which mask), is it quantized;
and the one function that does both to a tensor, shared by compress, account and save_compressed
so that all three agree bit for bit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .pruning import NOTHING_PRUNABLE, magnitude_masks, prunable_weights
from .quantization import fake_quantize_, fake_quantize_entries_, group_count, group_width_problem, quantizable_weights
from .spec import CompressionSpec, raise_problems
from .tensors import CHUNK, bit_patterns, flat_numpy, is_numpy_float32, storage_signature, unique_state


@dataclass
class TensorPlan:
    key: str  # first state_dict key of the tensor
    tensor: torch.Tensor  # shares memory with the model
    mask: torch.Tensor | None  # keep mask when pruned
    quantized: bool


@dataclass
class CompressionPlan:
    spec: CompressionSpec
    tensors: list[TensorPlan]
    aliases: dict[str, str]  # other state_dict key -> first key of the same (tied) tensor
    masks: dict[str, torch.Tensor]  # parameter name -> keep mask


def plan_compression(
    model: nn.Module, spec: CompressionSpec, masks: dict[str, torch.Tensor] | None = None, *, exact: bool = True
) -> CompressionPlan:
    """Given masks are used as they are; without them a pruning spec computes magnitude masks (a
    calibrated method or the 2:4 pattern must be given its masks). exact=True (compress,
    save_compressed) refuses to quantize half-precision weights."""
    spec.validate()
    parameters = dict(model.named_parameters(remove_duplicate=False))
    by_magnitude = not spec.masks_calibrated
    masks_to_compute = masks is None and spec.prunes
    to_prune = prunable_weights(model, spec.prune_embeddings) if masks_to_compute else None
    quantized = quantizable_weights(model, spec.quantize_embeddings) if spec.quantizes else {}
    masks = masks or {}
    problems = [f"mask {name!r} matches no parameter" for name in masks if name not in parameters]
    problems += [
        f"mask {name!r} has shape {tuple(mask.shape)}, the parameter has {tuple(parameters[name].shape)}"
        for name, mask in masks.items()
        if name in parameters and mask.shape != parameters[name].shape
    ]
    if to_prune == {}:
        problems.append(NOTHING_PRUNABLE)
    elif masks_to_compute and not by_magnitude:
        problems.append(
            f"prune_method {spec.prune_method!r} with prune_pattern {spec.prune_pattern!r} needs its masks given "
            "(masks=...): only unstructured magnitude masks are computed here"
        )
    if spec.quantizes and not quantized:
        problems.append(
            "nothing quantizable: quantizable tensors are nn.Linear weight matrices, plus nn.Embedding "
            "weights with quantize_embeddings=True"
        )
    # Bit-exact files rest on exact float32 products (code - zero_point) * scale; a half-precision
    # copy of them would not re-quantize to the same codes.
    problems += [
        f"{name} is {str(p.dtype).removeprefix('torch.')}: quantization needs float32 (or float64) weights, "
        "e.g. model.float() first"
        for name, p in quantized.items()
        if exact and p.dtype not in (torch.float32, torch.float64)
    ]
    problems += [
        group_width_problem(name, tuple(p.shape), spec.granularity, spec.group_size) for name, p in quantized.items()
    ]
    problems = [problem for problem in problems if problem]
    raise_problems("compression of this model", problems)
    if to_prune:
        masks = magnitude_masks(to_prune, spec.sparsity, spec.scope)

    mask_of = {storage_signature(parameters[name].detach()): mask for name, mask in masks.items()}
    quantized_signatures = {storage_signature(p.detach()) for p in quantized.values()}
    state, aliases = unique_state(model)
    tensors = [
        TensorPlan(key, tensor, mask_of.get(storage_signature(tensor)), storage_signature(tensor) in quantized_signatures)
        for key, tensor in state.items()
    ]
    return CompressionPlan(spec, tensors, aliases, masks)


@dataclass
class CompressedTensor:
    stored: np.ndarray | None  # flat positions of the nonzero values of a pruned tensor
    scale: torch.Tensor | None  # per quantization group, when quantized
    zero_point: torch.Tensor | None


def compress_tensor_(tensor: torch.Tensor, mask: torch.Tensor | None, spec: CompressionSpec | None) -> CompressedTensor:
    """Prune by mask, then fake-quantize (when spec is given), in place. Zero is a quantization grid
    point, so pruned entries stay exactly +0.0 without masking again. A pruned float32 CPU tensor
    is handled through its kept entries only (quantization is per entry, so the bits are the same)."""
    scale = zero_point = None
    with torch.no_grad():
        if mask is not None and is_numpy_float32(tensor):
            return _compress_kept_entries_(tensor, mask, spec)
        if mask is not None:
            tensor.masked_fill_(~mask.to(tensor.device), 0)
        if spec is not None:
            scale, zero_point = fake_quantize_(tensor, spec.bits, spec.scheme, spec.granularity, spec.group_size)
    stored = np.flatnonzero(bit_patterns(tensor)) if mask is not None else None
    return CompressedTensor(stored, scale, zero_point)


def _compress_kept_entries_(tensor: torch.Tensor, mask: torch.Tensor, spec: CompressionSpec | None) -> CompressedTensor:
    """compress_tensor_ through the kept entries: gather them, quantize them, then zero the tensor
    and scatter them back, chunk by chunk so each chunk is written while it is in cache."""
    flat, keep = flat_numpy(tensor), mask.reshape(-1).cpu().numpy()
    starts = range(0, flat.size, CHUNK)
    chunk_positions = [np.flatnonzero(keep[start : start + CHUNK]) for start in starts]
    kept = _concatenate([flat[start : start + CHUNK][found] for start, found in zip(starts, chunk_positions)], flat.dtype)
    chunk_positions = [found + start for start, found in zip(starts, chunk_positions)]
    kept_positions = _concatenate(chunk_positions, np.int64)
    scale = zero_point = None
    if spec is not None:
        groups = group_count(tuple(tensor.shape), spec.granularity, spec.group_size)
        group_length = flat.size // max(1, groups)  # groups are consecutive runs of the flat tensor
        group_starts = np.searchsorted(kept_positions, np.arange(groups) * group_length)
        scale, zero_point = fake_quantize_entries_(kept, group_starts, spec.bits, spec.scheme)
    done = 0
    for start, positions in zip(starts, chunk_positions):
        flat[start : start + CHUNK] = 0
        flat[positions] = kept[done : done + positions.size]
        done += positions.size
    return CompressedTensor(kept_positions[kept.view(np.uint32) != 0], scale, zero_point)


def _concatenate(arrays: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)


def compressed_copy(item: TensorPlan, spec: CompressionSpec) -> tuple[torch.Tensor, CompressedTensor]:
    """What compress() would leave in item.tensor, without touching the model."""
    values = item.tensor.detach().clone()
    return values, compress_tensor_(values, item.mask, spec if item.quantized else None)
