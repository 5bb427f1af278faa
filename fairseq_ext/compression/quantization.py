"""Uniform k-bit weight quantization: round-to-nearest post-training quantization, and fake
quantization with a straight-through estimator for quantization-aware finetuning.

A code is an unsigned k-bit integer and stands for (code - zero_point) * scale, with one scale and
zero_point per group: a row (output channel of a Linear, token of an Embedding) for granularity
"channel", the whole tensor for "tensor", and for "group" each run of group_size consecutive
columns of a row (the layout of GPTQ and of int4 kernels; the width must be a multiple of
group_size, so groups are the rows of the flat tensor reshaped to (-1, group_size)). Two choices
make compression exact and repeatable:

- Zero is always a grid point (symmetric: zero_point = 2**(k-1) and codes 1 .. 2**k - 1; asymmetric:
  the range is stretched to include 0 and the zero_point is an integer in [1, 2**k - 2], so each
  sign keeps at least one level), so pruned zeros stay 0.
- Scales are rounded up to 16 significant bits, so (code - zero_point) * scale is an exact float32
  product for every code. Quantizing an already quantized tensor then gives back the same scale,
  zero_point and codes, bit for bit: save_compressed can re-derive the codes of a model that
  compress() quantized in place.

The range of a group is its min/max (extended to 0), so nothing is clipped: every value lies within
half a step of its grid point. All arithmetic is float32 (division, round-half-even, product), which
numpy and torch on any device compute identically, so the in-place numpy path used for speed on CPU
and the torch path used in training give the same bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .spec import (
    GRANULARITIES,
    QUANTIZED_BITS,
    SCHEMES,
    UNQUANTIZED_BITS,
    choice_problem,
    group_size_problem,
    raise_problems,
)
from .tensors import CHUNK, is_numpy_float32, linear_and_embedding_weights

# float32 has 24 significant bits and |code - zero_point| < 2**8, so scales keep 16.
SCALE_DROPPED_BITS = 8


def quantization_problems(bits, scheme, granularity, group_size=0, *, allow_off: bool = False) -> list[str]:
    allowed_bits = QUANTIZED_BITS + UNQUANTIZED_BITS if allow_off else QUANTIZED_BITS
    found = [
        choice_problem("bits", bits, allowed_bits),
        choice_problem("scheme", scheme, SCHEMES),
        choice_problem("granularity", granularity, GRANULARITIES),
        group_size_problem(granularity, group_size),
    ]
    return [p for p in found if p]


def group_width_problem(name: str, shape: tuple[int, ...], granularity: str, group_size: int) -> str | None:
    """Groups of group_size columns must tile every row: None when they do (or granularity is not "group")."""
    width = shape[-1] if shape else 1
    if granularity != "group" or group_size_problem(granularity, group_size) or width % group_size == 0:
        return None
    return f"{name} is {width} wide, not a multiple of group_size {group_size}"


def group_sizes_that_fit(widths) -> list[int]:
    """The group sizes whose groups tile the rows of every one of these widths: the divisors of their gcd."""
    common = math.gcd(*widths)
    return [size for size in range(1, common + 1) if common % size == 0]


@dataclass(frozen=True)
class QuantizedTensor:
    codes: torch.Tensor  # uint8, the weight's shape
    scale: torch.Tensor  # float32, one per group
    zero_point: torch.Tensor  # int32, one per group: the code of 0.0
    bits: int
    scheme: str
    granularity: str
    group_size: int  # columns per group for granularity "group", else 0
    dtype: torch.dtype  # of the weight, restored by dequantize

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape


def group_count(shape: tuple[int, ...], granularity: str, group_size: int = 0) -> int:
    """How many (scale, zero_point) pairs a tensor of this shape has. Groups are the rows of the
    tensor reshaped, row-major, to (group_count, -1)."""
    if granularity == "group":
        return math.prod(shape) // group_size
    return shape[0] if granularity == "channel" and len(shape) >= 1 else 1


def quantization_params(lo: torch.Tensor, hi: torch.Tensor, bits: int, scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group (scale, zero_point) for ranges lo <= 0 <= hi (float32): the smallest scale whose
    grid covers [lo, hi] without clipping."""
    if not torch.isfinite(hi - lo).all():  # lo <= 0 <= hi: finite exactly when both ends are
        raise ValueError("cannot quantize a tensor that holds NaN or infinite values")
    if scheme == "symmetric":
        step = torch.maximum(-lo, hi) / (2 ** (bits - 1) - 1)
        zero_point = torch.full(lo.shape, 2 ** (bits - 1), dtype=torch.int32, device=lo.device)
    else:
        step, zero_point = _asymmetric_step(lo, hi, 2**bits - 1)
    step = torch.where(step > 0, step, torch.ones_like(step))  # an all-zero group: any scale will do
    return _round_up_to_16_significant_bits(step), zero_point


def _asymmetric_step(lo: torch.Tensor, hi: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The integer zero_point z in [1, levels - 1] minimising max(-lo / z, hi / (levels - z)), the
    step that fits both ends. The optimum is next to the real-valued balance point; four neighbours
    absorb its rounding. Keeping a level on each side of zero makes re-quantization exact: were z = 0
    allowed, a group whose few negatives all round to 0 would re-quantize as a one-sided group, on a
    finer grid that does not contain the values."""
    width = hi - lo
    balance = torch.where(width > 0, levels * -lo / torch.where(width > 0, width, 1.0), 0.0)
    offsets = torch.arange(-1, 3, device=lo.device, dtype=torch.float32)
    candidates = (balance.floor()[:, None] + offsets).clamp(1, levels - 1)
    steps = torch.maximum(-lo[:, None] / candidates, hi[:, None] / (levels - candidates))
    best = steps.argmin(dim=1, keepdim=True)  # first minimum: deterministic
    return steps.gather(1, best).squeeze(1), candidates.gather(1, best).squeeze(1).to(torch.int32)


def _round_up_to_16_significant_bits(scale: torch.Tensor) -> torch.Tensor:
    low = (1 << SCALE_DROPPED_BITS) - 1
    return ((scale.view(torch.int32) + low) & ~low).view(torch.float32)


def _group_ranges(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = torch.aminmax(groups, dim=1)
    return lo.clamp(max=0), hi.clamp(min=0)


def _params_for(values: torch.Tensor, bits: int, scheme: str, granularity: str, group_size: int):
    groups = values.reshape(group_count(tuple(values.shape), granularity, group_size), -1).float()
    if groups.numel() == 0:
        empty = torch.zeros(groups.shape[0], device=values.device)
        return groups, empty + 1, empty.to(torch.int32)
    scale, zero_point = quantization_params(*_group_ranges(groups), bits, scheme)
    return groups, scale, zero_point


def _validate_options(
    subject: str, weight: torch.Tensor, bits, scheme, granularity, group_size, *, allow_off: bool = False
) -> None:
    problems = quantization_problems(bits, scheme, granularity, group_size, allow_off=allow_off)
    problems.append(group_width_problem("weight", tuple(weight.shape), granularity, group_size))
    raise_problems(subject, [p for p in problems if p])


def quantize(weight: torch.Tensor, bits: int, scheme: str, granularity: str, group_size: int = 0) -> QuantizedTensor:
    """Round-to-nearest quantization of weight into bits-bit codes."""
    _validate_options("quantization", weight, bits, scheme, granularity, group_size)
    groups, scale, zero_point = _params_for(weight.detach(), bits, scheme, granularity, group_size)
    codes = torch.round(groups / scale[:, None]) + zero_point[:, None]
    return QuantizedTensor(
        codes=codes.to(torch.uint8).reshape(weight.shape), scale=scale, zero_point=zero_point,
        bits=bits, scheme=scheme, granularity=granularity, group_size=group_size, dtype=weight.dtype,
    )


def dequantize(quantized: QuantizedTensor) -> torch.Tensor:
    groups = quantized.codes.reshape(quantized.scale.shape[0], -1).float()
    values = (groups - quantized.zero_point[:, None].float()) * quantized.scale[:, None]
    return values.reshape(quantized.shape).to(quantized.dtype)


def _fake_quantized(weight: torch.Tensor, bits: int, scheme: str, granularity: str, group_size: int) -> torch.Tensor:
    """dequantize(quantize(weight)) without materialising the codes."""
    groups, scale, _ = _params_for(weight, bits, scheme, granularity, group_size)
    scale = scale[:, None]
    # round(x / s) * s equals (code - zero_point) * s for every nonzero code; "+ 0.0" turns the -0.0
    # that round gives small negatives into the +0.0 that dequantize (and a load) produces.
    values = torch.round(groups / scale) * scale + 0.0
    return values.reshape(weight.shape).to(weight.dtype)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, bits, scheme, granularity, group_size):
        return _fake_quantized(weight.detach(), bits, scheme, granularity, group_size)

    @staticmethod
    def backward(ctx, grad_output):
        # Rounding has zero gradient almost everywhere; the estimator passes it through unchanged
        # (there is no clipped region to zero out: ranges are the min/max).
        return grad_output, None, None, None, None


def fake_quantize(weight: torch.Tensor, bits: int, scheme: str, granularity: str, group_size: int = 0) -> torch.Tensor:
    """dequantize(quantize(weight)), differentiable with the straight-through estimator.
    bits 16 or 32 mean no quantization: weight itself is returned."""
    _validate_options("quantization", weight, bits, scheme, granularity, group_size, allow_off=True)
    if bits in UNQUANTIZED_BITS:
        return weight
    return _StraightThrough.apply(weight, bits, scheme, granularity, group_size)


def fake_quantize_(
    weight: torch.Tensor, bits: int, scheme: str, granularity: str, group_size: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """In place, without autograd: weight.copy_(fake_quantize(weight)), bit for bit, but in numpy
    and without temporaries when weight is a contiguous float32 CPU tensor. Returns the per-group
    (scale, zero_point) it used."""
    _validate_options("quantization", weight, bits, scheme, granularity, group_size)
    with torch.no_grad():
        if not is_numpy_float32(weight):
            _, scale, zero_point = _params_for(weight.detach(), bits, scheme, granularity, group_size)
            weight.copy_(_fake_quantized(weight.detach(), bits, scheme, granularity, group_size))
            return scale, zero_point
        groups = weight.detach().view(-1).numpy().reshape(group_count(tuple(weight.shape), granularity, group_size), -1)
        if groups.size == 0:
            return _params_for(weight.detach(), bits, scheme, granularity, group_size)[1:]
        lo = torch.from_numpy(np.minimum(groups.min(axis=1), 0))
        hi = torch.from_numpy(np.maximum(groups.max(axis=1), 0))
        scale, zero_point = quantization_params(lo, hi, bits, scheme)
        _round_to_grid_(groups, scale.numpy()[:, None])
        return scale, zero_point


def fake_quantize_entries_(entries: np.ndarray, group_starts: np.ndarray, bits: int, scheme: str):
    """fake_quantize_ for a tensor given by its stored entries (float32, in flat order; quantized in
    place) and the index of each group's first entry, every other entry being zero: a pruned tensor
    costs only its kept entries. Returns (scale, zero_point) for all len(group_starts) groups."""
    counts = np.diff(group_starts, append=entries.size)
    present = np.flatnonzero(counts)
    lo = np.zeros(group_starts.size, dtype=np.float32)
    hi = np.zeros(group_starts.size, dtype=np.float32)
    if present.size:
        lo[present] = np.minimum(np.minimum.reduceat(entries, group_starts[present]), 0)
        hi[present] = np.maximum(np.maximum.reduceat(entries, group_starts[present]), 0)
    scale, zero_point = quantization_params(torch.from_numpy(lo), torch.from_numpy(hi), bits, scheme)
    _round_to_grid_(entries.reshape(-1, 1), np.repeat(scale.numpy(), counts)[:, None])
    return scale, zero_point


def _round_to_grid_(values: np.ndarray, scale: np.ndarray) -> None:
    """values <- round(values / scale) * scale + 0.0, as _fake_quantized computes it, for 2-D values
    and a (rows, 1) scale; a block of rows at a time, so the four passes run in cache."""
    rows_per_block = max(1, CHUNK // max(1, values.shape[1]))
    for start in range(0, values.shape[0], rows_per_block):
        block, block_scale = values[start : start + rows_per_block], scale[start : start + rows_per_block]
        np.divide(block, block_scale, out=block)
        np.rint(block, out=block)
        np.multiply(block, block_scale, out=block)
        np.add(block, 0.0, out=block)


def quantizable_weights(model: nn.Module, include_embeddings: bool = True) -> dict[str, nn.Parameter]:
    return linear_and_embedding_weights(model, include_embeddings)


class QuantizationAwareTraining:
    """Swap fake-quantized values into the weights for a forward and backward pass, then swap the
    latent float weights back so the optimizer updates them with gradients taken at the quantized
    point (the straight-through estimator). Values are written into the existing tensors, so
    state_dict keys, tied parameters and modules that read child.weight directly all see them.

        with QuantizationAwareTraining(quantizable_weights(model), 4, "symmetric", "channel", masks):
            loss = criterion(model(x)); loss.backward()
        optimizer.step()

    Run backward inside the block: leaving it rewrites the weights, which autograd then rejects.
    """

    def __init__(self, weights: dict[str, torch.Tensor], bits: int, scheme: str, granularity: str,
                 masks: dict[str, torch.Tensor] | None = None, group_size: int = 0):
        masks = masks or {}
        problems = quantization_problems(bits, scheme, granularity, group_size, allow_off=True)
        problems += [group_width_problem(name, tuple(w.shape), granularity, group_size) for name, w in weights.items()]
        problems += [f"mask {name!r} matches no weight" for name in masks if name not in weights]
        raise_problems("quantization-aware training", [p for p in problems if p])
        self.weights, self.masks = weights, masks
        self.bits, self.scheme, self.granularity, self.group_size = bits, scheme, granularity, group_size
        self._latent: dict[str, torch.Tensor] | None = None

    def __enter__(self) -> QuantizationAwareTraining:
        if self._latent is not None:
            raise RuntimeError("QuantizationAwareTraining is already active")
        self._latent = {}
        if self.bits in UNQUANTIZED_BITS:
            return self
        grid = (self.bits, self.scheme, self.granularity, self.group_size)
        with torch.no_grad():
            for name, weight in self.weights.items():
                self._latent[name] = weight.detach().clone()
                pruned = ~self.masks[name].to(weight.device) if name in self.masks else None
                if pruned is not None:
                    weight.masked_fill_(pruned, 0)
                weight.copy_(_fake_quantized(weight.detach(), *grid))
                if pruned is not None:  # zero is a grid point: a guard, e.g. against a low-precision cast
                    weight.masked_fill_(pruned, 0)
        return self

    def __exit__(self, *exc_info) -> None:
        with torch.no_grad():
            for name, latent in self._latent.items():
                self.weights[name].copy_(latent)
        self._latent = None
