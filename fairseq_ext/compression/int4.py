"""Real 4-bit inference on the CPU: torch's int4 weight-only kernels run the quantizer's own codes.

``torch.ops.aten._weight_int4pack_mm_for_cpu`` (the kernel behind torchao's and gpt-fast's CPU int4 path) multiplies
bf16 activations by a matrix of 4-bit codes ``q`` packed two to a byte, and dequantizes on the fly, per group of
``G`` input columns (G = 32, 64, 128 or 256) and output row, as ``(q - 8) * scale + zero``. Every grid of
``quantization.quantize`` at 2, 3 or 4 bits is such a grid, so the running model computes with the codes the byte
accounting counts:

- A code ``c`` of zero point ``z`` stands for ``(c - z) * s``. Where ``c - z + 8`` lies in 0..15 for every code of a
  kernel group (always at 2 and 3 bits, and on the symmetric 4-bit grid, whose zero point is 8) the kernel gets
  ``q = c - z + 8`` and ``zero = 0``; elsewhere (an asymmetric 4-bit group) the lowest step gets ``q = 0`` and the
  zero carries the offset. q depends on the steps ``c - z`` alone, so two grids of the same values (zero points one
  apart, a code unused) run bit for bit alike.
- A group of the grid spans G kernel groups or more (a row for "channel", the whole matrix for "tensor", a multiple
  of G columns for "group"): each kernel group repeats its scale. G is the largest kernel size dividing both.
- The kernel takes its scales and zeros in the activations' dtype, bf16: that rounding (relative 2**-9 at most) and
  the bf16 activations and output are the only differences from the simulated model, which tests bound.

Token embeddings quantized at these bits become ``Int4Embedding``: a lookup that unpacks only the rows it reads. A
table tied to an output projection (fairseq's shared embeddings) reads the projection's packed codes themselves, so
a tied matrix is stored once, as the accounting counts it. Where its rows lie in the kernel's layout depends on the
CPU (the packing blocks rows by the vector width), so ``packed_row_layout`` finds it with probe matrices and every
table is checked against its codes; a layout it cannot read keeps the embedding's own codes, one per byte.

Plain torch, duck-typed: no fairseq import.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .module_surgery import disable_attention_fast_path, is_float_linear
from .quantization import QuantizedTensor, quantize

__all__ = [
    "KERNEL_GROUP_SIZES", "Int4Linear", "Int4Embedding", "int4_kernel_problem", "kernel_group_size",
    "int4_linear_from_quantized", "int4_embedding_from_quantized", "quantize_model_int4",
    "int4_width_problems", "packed_row_layout", "CodedWeight", "replace_with_int4",
]

KERNEL_GROUP_SIZES = (256, 128, 64, 32)  # what _weight_int4pack_mm_for_cpu accepts, largest first
ROW_MULTIPLE = 16  # the packing needs a multiple of 16 output rows: others are padded with zero rows
MAX_BITS = 4
PACK_CHUNK_ROWS = 1024  # rows packed at a time: the kernel's packing takes int32 codes, 4 bytes each


def _pack_op():
    return getattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu", None)


def _matmul_op():
    return getattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu", None)


def int4_kernel_problem(device="cpu", dtype=torch.float32) -> str | None:
    """Why torch's CPU int4 kernels cannot run a model on ``device`` in ``dtype``; None when they can."""
    if _pack_op() is None or _matmul_op() is None:
        return (f"this torch ({torch.__version__}) has no CPU int4 kernel "
                "(torch.ops.aten._weight_int4pack_mm_for_cpu)")
    if torch.device(device).type != "cpu":
        return f"the int4 kernels run on the CPU (the model is on {device})"
    if dtype != torch.float32:
        return f"the int4 kernels take a float32 model (it converts activations itself), not {dtype}"
    return None


def kernel_group_size(width: int, group_width: int) -> int | None:
    """The kernel's group size for a grid whose groups are ``group_width`` consecutive entries of rows ``width``
    wide (``width`` for one scale per row): the largest of 256..32 dividing both, None if none does."""
    return next((g for g in KERNEL_GROUP_SIZES if width % g == 0 and group_width % g == 0), None)


def _grid_group_width(quantized: QuantizedTensor) -> int:
    rows, width = quantized.shape
    return {"group": quantized.group_size, "channel": width, "tensor": rows * width}[quantized.granularity]


def _kernel_grid(quantized: QuantizedTensor, group: int):
    """(bf16 scales_and_zeros (width / group, rows, 2), int32 shift per (row, kernel group)): the kernel's code is
    ``q = c - shift + 8``. Where ``c - z + 8`` stays within 0..15 for every code of a kernel group, that is q and the
    zero is exactly 0 (always so at 2 and 3 bits and on the symmetric grid, whose zero point is 8); elsewhere (an
    asymmetric 4-bit group spanning 16 steps off centre) the lowest step gets q = 0 and the zero carries the rest."""
    rows, width = quantized.shape
    if quantized.bits > MAX_BITS:
        raise ValueError(f"int4 kernels hold at most {MAX_BITS}-bit codes, not {quantized.bits}")
    # Grid group of every (row, kernel group): both index the flat tensor, grid groups being its runs of group_width.
    starts = torch.arange(rows)[:, None] * width + torch.arange(0, width, group)[None, :]
    grid_group = starts // _grid_group_width(quantized)  # (rows, width / group)
    scale = quantized.scale[grid_group]
    zero_point = quantized.zero_point[grid_group].to(torch.int32)
    # The steps v = c - z a kernel group holds: q = v + offset, the offset a function of them alone, so that two
    # grids of the same values (their zero points one apart, a code unused) give the same q and zeros.
    codes = quantized.codes.reshape(rows, width // group, group)
    lowest = codes.amin(dim=2).to(torch.int32) - zero_point
    highest = codes.amax(dim=2).to(torch.int32) - zero_point
    offset = torch.where((lowest >= -8) & (highest <= 7), 8, -lowest)
    shift = zero_point - offset + 8
    zero = (8 - offset).float() * scale
    grid = torch.stack([scale, zero], dim=-1).transpose(0, 1).to(torch.bfloat16).contiguous()
    return grid, shift


def _kernel_codes(quantized: QuantizedTensor, group: int, shift, start: int, stop: int) -> torch.Tensor:
    """int32 kernel codes q (0..15) of rows start..stop; rows past the weight's are padding (code 8)."""
    rows, width = quantized.shape
    end = min(stop, rows)
    codes = quantized.codes[start:end].to(torch.int32) - shift[start:end].repeat_interleave(group, dim=1) + 8
    if stop > end:
        codes = torch.cat([codes, torch.full((stop - max(start, rows), width), 8, dtype=torch.int32)])
    return codes


def _padded_rows(rows: int) -> int:
    return -(-rows // ROW_MULTIPLE) * ROW_MULTIPLE


def _packed_codes(quantized: QuantizedTensor, group: int, shift) -> torch.Tensor:
    """torch's int4 packing of the kernel codes, PACK_CHUNK_ROWS rows at a time where the layout allows it (the
    packing takes int32 codes: 4 bytes per weight for a whole vocabulary projection at once)."""
    rows = _padded_rows(quantized.shape[0])
    step = PACK_CHUNK_ROWS if packed_row_layout(rows).chunkable else rows
    chunks = [_pack_op()(_kernel_codes(quantized, group, shift, a, min(a + step, rows)), 2)
              for a in range(0, rows, step)]
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


class Int4Linear(nn.Module):
    """A Linear whose weight is 4-bit codes in torch's int4 kernel layout: ``y = x W^T + b`` with ``x`` cast to bf16
    for the kernel and the result cast back (the bias is added in the input's dtype)."""

    weights_in_buffers = True  # runtime.runtime_bytes counts them

    def __init__(self, packed, scales_and_zeros, group_size, in_features, out_features, bias=None):
        super().__init__()
        # Not in the state_dict: an int4 module is built from a checkpoint, never saved as one.
        self.register_buffer("packed_weight", packed, persistent=False)
        self.register_buffer("scales_and_zeros", scales_and_zeros, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self.group_size, self.in_features, self.out_features = group_size, in_features, out_features

    def forward(self, x):
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = _matmul_op()(flat, self.packed_weight, self.group_size, self.scales_and_zeros)
        if y.shape[1] != self.out_features:
            y = y[:, : self.out_features]
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def dequantized(self) -> torch.Tensor:
        """The float32 weight the kernel multiplies by (scales and zeros as bf16 holds them)."""
        return _rows_of(self.packed_weight, self.scales_and_zeros, self.group_size,
                        packed_row_layout(self.packed_weight.shape[0]), torch.arange(self.out_features))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"group_size={self.group_size}, int4 codes")


def int4_linear_from_quantized(quantized: QuantizedTensor, bias: torch.Tensor | None = None) -> Int4Linear:
    """The int4 module for a (out_features, in_features) weight quantized at <= 4 bits. ValueError (with the reason)
    when the kernels cannot hold its grid: see int4_width_problems."""
    rows, width = quantized.shape
    problem = _width_problem("weight", quantized)
    if problem:
        raise ValueError(problem)
    group = kernel_group_size(width, _grid_group_width(quantized))
    grid, shift = _kernel_grid(quantized, group)
    padded = _padded_rows(rows)
    if padded != rows:  # zero rows (code 8, scale 0) that the forward slices off
        grid = torch.cat([grid, torch.zeros(grid.shape[0], padded - rows, 2, dtype=grid.dtype)], dim=1)
    packed = _packed_codes(quantized, group, shift)
    bias = None if bias is None else bias.detach().float().clone()
    return Int4Linear(packed, grid, group, width, rows, bias)


class PackedRowLayout:
    """Where torch's int4 packing of a matrix of ``rows`` rows puts the codes of row n, column k: the byte
    ``per_width[n] * width + offset[n] + k * stride[n]`` of the flat packed tensor, in its low nibble (shift 0) or
    high one (shift 4). ``chunkable``: packing row chunks of PACK_CHUNK_ROWS and concatenating them gives the same
    bytes. ``readable`` False: the layout is not of this form (then nothing else is set)."""

    def __init__(self, readable, per_width=None, offset=None, stride=None, shift=None, chunkable=False):
        self.readable, self.per_width, self.offset, self.stride, self.shift = readable, per_width, offset, stride, shift
        self.chunkable = chunkable

    def positions(self, rows: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(flat byte index (len(rows), width), nibble shift (len(rows), 1)) of the given rows."""
        base = self.per_width[rows] * width + self.offset[rows]
        return base[:, None] + torch.arange(width)[None, :] * self.stride[rows][:, None], self.shift[rows][:, None]


_LAYOUTS: dict[int, PackedRowLayout] = {}
PROBE_WIDTHS = (32, 64)


def packed_row_layout(rows: int) -> PackedRowLayout:
    """The layout of torch's int4 packing for ``rows`` rows (a multiple of 16) on this CPU, found by packing probe
    matrices whose codes spell each row's number, four bits at a time."""
    if rows not in _LAYOUTS:
        _LAYOUTS[rows] = _probe_layout(rows)
    return _LAYOUTS[rows]


def _probe_layout(rows: int) -> PackedRowLayout:
    firsts, strides, shifts = [], None, None
    for width in PROBE_WIDTHS:
        owner = {shift: torch.zeros(rows * width // 2, dtype=torch.int64) for shift in (0, 4)}  # nibble -> row
        number = torch.arange(rows)
        for digit in range(0, max(rows - 1, 1).bit_length(), 4):
            probe = ((number >> digit) & 15).to(torch.int32)[:, None].expand(rows, width).contiguous()
            packed = _pack_op()(probe, 2).reshape(-1).to(torch.int64)
            for shift in owner:
                owner[shift] |= ((packed >> shift) & 15) << digit
        found = _affine_rows(owner, rows, width)
        if found is None:
            return PackedRowLayout(False)
        first, stride, shift = found
        if strides is not None and not (torch.equal(stride, strides) and torch.equal(shift, shifts)):
            return PackedRowLayout(False)
        firsts.append(first)
        strides, shifts = stride, shift
    (w1, w2), (f1, f2) = PROBE_WIDTHS, firsts
    per_width = (f2 - f1) // (w2 - w1)
    offset = f1 - per_width * w1
    if not torch.equal(per_width * w2 + offset, f2):
        return PackedRowLayout(False)
    return PackedRowLayout(True, per_width, offset, strides, shifts, _chunks_pack_alike(rows))


def _affine_rows(owner, rows, width):
    """(first byte, stride, shift) per row when every row's codes sit in one nibble at bytes first + k * stride."""
    first = torch.full((rows,), -1, dtype=torch.int64)
    stride = torch.zeros(rows, dtype=torch.int64)
    shift = torch.full((rows,), -1, dtype=torch.int64)
    position = torch.arange(owner[0].numel())
    for nibble, row_of in owner.items():
        count = torch.bincount(row_of, minlength=rows)
        lowest = torch.full((rows,), position.numel(), dtype=torch.int64).scatter_reduce(0, row_of, position, "amin")
        highest = torch.full((rows,), -1, dtype=torch.int64).scatter_reduce(0, row_of, position, "amax")
        here = count == width
        first[here], shift[here] = lowest[here], nibble
        stride[here] = (highest[here] - lowest[here]) // (width - 1)
    if (shift < 0).any():
        return None
    columns = first[:, None] + torch.arange(width)[None, :] * stride[:, None]
    for nibble, row_of in owner.items():
        mine = shift == nibble
        if not torch.equal(row_of[columns[mine]], torch.arange(rows)[mine][:, None].expand(-1, width)):
            return None
    return first, stride, shift


def _chunks_pack_alike(rows: int) -> bool:
    if rows <= PACK_CHUNK_ROWS:
        return True
    codes = (torch.arange(rows * PROBE_WIDTHS[0], dtype=torch.int32) % 16).reshape(rows, -1)
    whole = _pack_op()(codes, 2).reshape(-1)
    chunks = torch.cat([_pack_op()(codes[i : i + PACK_CHUNK_ROWS].contiguous(), 2).reshape(-1)
                        for i in range(0, rows, PACK_CHUNK_ROWS)])
    return torch.equal(whole, chunks)


def _rows_of(codes, scales_and_zeros, group, layout, rows):
    """float32 rows ``rows`` (int64) of a matrix stored as ``codes`` (packed, or one code per byte when
    ``layout`` is None) with the kernel's (q - 8) * scale + zero."""
    width = scales_and_zeros.shape[0] * group
    if layout is None:
        q = codes[rows].to(torch.int32)
    else:
        index, shift = layout.positions(rows, width)
        q = (codes.reshape(-1)[index].to(torch.int32) >> shift) & 15
    grid = scales_and_zeros[:, rows].float()  # (width / group, len(rows), 2)
    scale = grid[..., 0].transpose(0, 1).repeat_interleave(group, dim=1)
    zero = grid[..., 1].transpose(0, 1).repeat_interleave(group, dim=1)
    return (q - 8).float() * scale + zero


class Int4Embedding(nn.Module):
    """A token embedding of 4-bit codes: a lookup dequantizes only the rows it reads, exactly as the kernel would.
    ``source``: the Int4Linear whose packed codes hold the table (a tied output projection, or one made for this
    table), or None with ``codes``, one code per byte, when this CPU's packing layout could not be read."""

    weights_in_buffers = True  # runtime.runtime_bytes counts them

    def __init__(self, num_embeddings, embedding_dim, padding_idx, source=None, codes=None, scales_and_zeros=None,
                 group_size=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.source = source  # a submodule: with a tied projection, the same module is reached twice
        if source is None:
            self.register_buffer("codes", codes, persistent=False)
            self.register_buffer("scales_and_zeros", scales_and_zeros, persistent=False)
            self.group_size = group_size

    def forward(self, tokens):
        flat = tokens.reshape(-1)
        if self.source is not None:
            src = self.source
            rows = _rows_of(src.packed_weight, src.scales_and_zeros, src.group_size,
                            packed_row_layout(src.packed_weight.shape[0]), flat)
        else:
            rows = _rows_of(self.codes, self.scales_and_zeros, self.group_size, None, flat)
        return rows.reshape(*tokens.shape, self.embedding_dim)

    def extra_repr(self):
        where = "the codes of its Int4Linear" if self.source is not None else "its own codes, one per byte"
        return f"{self.num_embeddings}, {self.embedding_dim}, padding_idx={self.padding_idx}, int4 rows in {where}"


def int4_embedding_from_quantized(quantized: QuantizedTensor, padding_idx=None, source: Int4Linear | None = None):
    """The int4 table for a (num_embeddings, dim) weight quantized at <= 4 bits; ``source``: the Int4Linear made of
    the same codes (a tied projection), else one is made. Its rows are checked against the codes; where this CPU's
    layout cannot be read, the table keeps its own codes instead."""
    rows, width = quantized.shape
    if source is None:
        source = int4_linear_from_quantized(quantized)
    layout = packed_row_layout(source.packed_weight.shape[0])
    grid, shift = _kernel_grid(quantized, source.group_size)
    if layout.readable and _reads_back(source, layout, quantized, shift):
        return Int4Embedding(rows, width, padding_idx, source=source)
    codes = torch.cat([_kernel_codes(quantized, source.group_size, shift, a, min(a + PACK_CHUNK_ROWS, rows))
                       .to(torch.uint8) for a in range(0, rows, PACK_CHUNK_ROWS)])
    return Int4Embedding(rows, width, padding_idx, codes=codes, scales_and_zeros=grid, group_size=source.group_size)


def _reads_back(source: Int4Linear, layout: PackedRowLayout, quantized: QuantizedTensor, shift) -> bool:
    """Whether ``layout`` finds, in the source's packed bytes, exactly the kernel codes of every row."""
    rows, width = quantized.shape
    for start in range(0, rows, PACK_CHUNK_ROWS):
        stop = min(start + PACK_CHUNK_ROWS, rows)
        index, nibble = layout.positions(torch.arange(start, stop), width)
        found = (source.packed_weight.reshape(-1)[index].to(torch.int32) >> nibble) & 15
        if not torch.equal(found, _kernel_codes(quantized, source.group_size, shift, start, stop)):
            return False
    return True


def _width_problem(name: str, quantized: QuantizedTensor) -> str | None:
    rows, width = quantized.shape
    if quantized.bits > MAX_BITS:
        return f"{name} is quantized at {quantized.bits} bits; the int4 kernels hold 2..{MAX_BITS}"
    if kernel_group_size(width, _grid_group_width(quantized)) is None:
        what = (f"groups of {quantized.group_size} columns" if quantized.granularity == "group"
                else f"{width} columns")
        return (f"{name}: {what}, not a multiple of {KERNEL_GROUP_SIZES[-1]} (the int4 kernels scale groups of "
                f"{', '.join(map(str, sorted(KERNEL_GROUP_SIZES)))} columns)")
    return None


def int4_width_problems(weights: dict[str, QuantizedTensor]) -> list[str]:
    """Why the kernels cannot hold some of these quantized weights ({name: quantized}); [] when they all fit."""
    return [p for name, q in weights.items() if (p := _width_problem(name, q))]


@dataclass
class CodedWeight:
    """A weight to run on int4 codes: ``grid`` tells its shape and grid (shape, bits, granularity, group_size, as a
    QuantizedTensor has them), ``codes()`` gives its QuantizedTensor, ``value()`` its float value (for a module that
    reads it as a float). Both are called at most once, when its turn comes: one weight's codes at a time."""

    grid: Any
    codes: Callable[[], QuantizedTensor]
    value: Callable[[], torch.Tensor]


@dataclass(frozen=True)
class GridShape:
    """What the kernels need to know of a grid before its codes exist (CodedWeight.grid)."""

    shape: tuple[int, ...]
    bits: int
    granularity: str
    group_size: int


def replace_with_int4(model: nn.Module, weights: dict[str, CodedWeight], bias_of: Callable) -> dict[str, list]:
    """Replace, in place, every float Linear and token Embedding whose weight is one of ``weights`` (keyed by a
    state_dict name of the parameter) by int4 modules of its codes, one weight at a time; a tied table reads its
    projection's codes. A table another module reads as a float (RoBERTa's LM head) stays a float, made of value().
    ``bias_of(module, weight names)``: the bias of a Linear being replaced. Returns {"linears": [...], "embeddings":
    [...]} (qualified module names), "replaced_weights" (the state_dict names of the weights and biases now inside
    int4 modules) and "float_weights" ([(state_dict names, tensor)] of the weights kept float). ValueError listing
    every weight the kernels cannot hold, before any change."""
    problems = int4_width_problems({name: weight.grid for name, weight in weights.items()})
    if problems:
        raise ValueError("; ".join(problems))
    by_id = {id(p): name for name, p in model.named_parameters(remove_duplicate=False) if name in weights}
    holders = {}  # weight name -> {(id(module), parameter name): [module, parameter name, [qualified names]]}
    places = {}  # id(module) -> {(id(parent), attribute): (parent, attribute, qualified module name)}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for name, parameter in module._parameters.items():
            if parameter is not None and id(parameter) in by_id:
                found = holders.setdefault(by_id[id(parameter)], {}).setdefault((id(module), name), [module, name, []])
                found[2].append(f"{module_name}.{name}" if module_name else name)
        for attribute, child in module.named_children():
            qualified = f"{module_name}.{attribute}" if module_name else attribute
            places.setdefault(id(child), {}).setdefault((id(module), attribute), (module, attribute, qualified))
    result = {"linears": [], "embeddings": [], "replaced_weights": [], "float_weights": []}
    for name, weight in weights.items():
        found = list(holders.pop(name, {}).values())  # popped: a replaced float weight is freed as we go
        quantized, linear, converted = weight.codes(), None, set()
        for module, parameter, names in found:
            if parameter == "weight" and is_float_linear(module):
                bias_names = [q[: -len("weight")] + "bias" for q in names]
                if linear is None:
                    linear = int4_linear_from_quantized(quantized, bias_of(module, names))
                _replace(places[id(module)].values(), linear, result["linears"])
                result["replaced_weights"] += names + bias_names
                converted.add(id(module))
        rest = [h for h in found if id(h[0]) not in converted]
        if any(not (h[1] == "weight" and type(h[0]) is nn.Embedding) for h in rest):
            value = weight.value()
            parameter = nn.Parameter(value, requires_grad=False)
            for module, attribute, names in rest:
                module._parameters[attribute] = parameter
                result["float_weights"].append((names, value))
            continue
        embedding = None
        for module, _, names in rest:
            if embedding is None:
                embedding = int4_embedding_from_quantized(quantized, module.padding_idx, linear)
            _replace(places[id(module)].values(), embedding, result["embeddings"])
            result["replaced_weights"] += names
        del quantized
    disable_attention_fast_path(model)
    model.eval()
    return result


def _replace(places, module, names):
    for parent, attribute, qualified in places:
        if getattr(parent, attribute) is not module:
            setattr(parent, attribute, module)
            names.append(qualified)


def quantize_model_int4(model: nn.Module, quantized_names, bits, scheme, granularity, group_size=0):
    """Replace, in place, the float Linears and token Embeddings whose weights (``quantized_names``: state_dict
    names, one per tied Parameter) lie on the grid ``quantize(weight, bits, scheme, granularity, group_size)`` by
    int4 modules of exactly those codes (re-quantizing a quantized weight gives back its codes), one weight at a time,
    each float weight freed once replaced. Returns replace_with_int4's result."""
    problem = int4_kernel_problem(*_device_and_dtype(model))
    if problem:
        raise ValueError(problem)
    parameters = dict(model.named_parameters())
    weights = {
        name: CodedWeight(
            GridShape(tuple(parameters[name].shape), bits, granularity, group_size),
            functools.partial(_quantized_weight, model, name, bits, scheme, granularity, group_size),
            functools.partial(model.get_parameter, name),
        )
        for name in quantized_names if name in parameters
    }
    del parameters
    return replace_with_int4(model, weights, lambda module, names: module.bias)


def _quantized_weight(model, name, bits, scheme, granularity, group_size):
    return quantize(model.get_parameter(name).detach().float(), bits, scheme, granularity, group_size)


def _device_and_dtype(model):
    parameter = next(model.parameters(), None)
    return ("cpu", torch.float32) if parameter is None else (parameter.device, parameter.dtype)
