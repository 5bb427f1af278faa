"""GPTQ and SparseGPT: one column-by-column solver for one Linear layer.

Both minimise ||X W^T - X Ŵ^T||^2 given only H = X^T X of the layer's calibration inputs X (Optimal Brain
Surgeon, made cheap by Frantar et al.): walk the input columns in order, fix each column (prune part of it,
quantize it, or both) and spread the error it makes onto the columns not fixed yet through the Cholesky factor of
H^-1. Errors of a block of columns reach the later columns in one matrix product (the "lazy batch" of GPTQ).

- SparseGPT (Frantar & Alistarh, 2023) chooses which weights of a block of columns to prune when it reaches the
  block, by w^2 / [H^-1]_jj^2, the error each would cost; unstructured (exactly the fraction asked of every block)
  or n:m (n of every m consecutive inputs of a row).
- GPTQ (Frantar et al., 2023) rounds each column to the grid of its quantization group.
- Both at once (SparseGPT's joint mode): prune, then round what is kept. A fixed mask (magnitude or Wanda) may
  replace SparseGPT's choice; the kept weights are then still updated, pruned ones stay zero.

One truth with round-to-nearest (quantization.py). A group's scale and zero point are what round-to-nearest
derives from the group's range (lo, hi) when the solver reaches it. The entries that hold lo and hi are never
pruned and are pinned to the codes round-to-nearest gives them, and every other code is clamped between those
two, so the result has exactly the range round-to-nearest's own result would have. Re-quantizing it (compress,
account, save_compressed) therefore finds the same scale, zero point and codes: the solver's output is stored
exactly, with no second record of its grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .pruning import lowest_pruned_keep, n_of_m_keep, pruned_count
from .quantization import quantization_params

BLOCK_COLUMNS = 128  # columns whose errors are applied to the rest at once (GPTQ's and SparseGPT's default)
DAMPING = 0.01  # fraction of H's mean diagonal added to its diagonal (GPTQ's default)


@dataclass(frozen=True)
class Grid:
    """Which quantization grid: bits, scheme and granularity as in CompressionSpec (group_size for "group")."""

    bits: int
    scheme: str
    granularity: str
    group_size: int = 0


@dataclass(frozen=True)
class Pruning:
    """What to prune: ``keep`` (a fixed mask, True = kept), or SparseGPT's choice of ``sparsity`` of every block of
    columns (unstructured), or of ``n`` of every ``m`` consecutive inputs of each row (``n_of_m``: (2, 4) for 2:4)."""

    sparsity: float = 0.0
    n_of_m: tuple[int, int] | None = None
    keep: torch.Tensor | None = None


def fixed_mask_pruning(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float,
                       n_of_m: tuple[int, int] | None, magnitude_keep: torch.Tensor | None) -> Pruning:
    """Magnitude pruning beside a calibrated quantizer: its mask was chosen before any weight moved, and stays."""
    return Pruning(keep=magnitude_keep)


def sparsegpt_pruning(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float,
                      n_of_m: tuple[int, int] | None, magnitude_keep: torch.Tensor | None) -> Pruning:
    """SparseGPT: the solver chooses what to prune, block by block, as it updates the weights it keeps."""
    return Pruning(sparsity=sparsity, n_of_m=n_of_m)


def inverse_hessian_factor(hessian: torch.Tensor, damping: float = DAMPING) -> torch.Tensor:
    """Upper Cholesky factor of (H + damping * mean(diag H) * I)^-1, in float32.

    A zero diagonal entry (an input that was always zero) gets 1, as in the reference code. A matrix that is not
    positive definite in float32 is factored in float64, then with ten times more damping until it is (too few
    samples, linearly dependent inputs), so the solver never divides by zero or returns NaN."""
    h = hessian.detach().clone()
    diagonal = h.diagonal()
    diagonal[diagonal <= 0] = 1.0
    mean = diagonal.mean().item()
    step = damping
    for _ in range(8):
        for dtype in (torch.float32, torch.float64):
            damped = h.to(dtype) + step * mean * torch.eye(h.shape[0], dtype=dtype, device=h.device)
            factor, info = torch.linalg.cholesky_ex(damped)
            if info.item() == 0:
                upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(factor), upper=True)
                if info.item() == 0 and torch.isfinite(upper).all():
                    return upper.to(torch.float32)
        step *= 10
    raise ValueError("the calibration inputs' second moments stay singular even with strong damping")


@dataclass
class _GroupState:
    """One quantization group's parameters per row, and the entries holding its range ends (-1: none needed)."""

    scale: torch.Tensor
    zero_point: torch.Tensor
    low_code: torch.Tensor
    high_code: torch.Tensor
    low_column: torch.Tensor
    high_column: torch.Tensor


class _GroupGrids:
    """The quantization groups of one weight, each set up when the solver reaches the block it starts in."""

    def __init__(self, grid: Grid, columns: int):
        self.grid = grid
        self.length = grid.group_size if grid.granularity == "group" else columns
        self.states: dict[int, _GroupState] = {}

    def starts_in(self, start: int, stop: int) -> range:
        return range(-(-start // self.length) * self.length, stop, self.length)

    def start(self, values: torch.Tensor, first_column: int, keep: torch.Tensor | None) -> None:
        """Parameters from the group's current values (rows x group columns), as round-to-nearest derives them;
        entries that a known mask prunes are left out (they become 0, which every range holds)."""
        candidates = values if keep is None else torch.where(keep, values, torch.zeros_like(values))
        rows, width = candidates.shape
        if self.grid.granularity == "tensor":
            flat = candidates.reshape(-1)
            lo_at, hi_at = torch.argmin(flat), torch.argmax(flat)
            lo, hi = flat[lo_at].expand(rows), flat[hi_at].expand(rows)
            low_column = torch.full((rows,), -1, dtype=torch.long, device=flat.device)
            high_column = low_column.clone()
            low_column[lo_at // width] = lo_at % width + first_column
            high_column[hi_at // width] = hi_at % width + first_column
        else:
            lo, low_column = torch.min(candidates, dim=1)
            hi, high_column = torch.max(candidates, dim=1)
            low_column, high_column = low_column + first_column, high_column + first_column
        lo, hi = lo.clamp(max=0).contiguous(), hi.clamp(min=0).contiguous()
        scale, zero_point = quantization_params(lo, hi, self.grid.bits, self.grid.scheme)
        zero_point = zero_point.float()
        low_code = torch.round(lo / scale) + zero_point
        high_code = torch.round(hi / scale) + zero_point
        none = torch.full_like(low_column, -1)  # a range end at zero needs no entry to hold it
        self.states[first_column // self.length] = _GroupState(
            scale, zero_point, low_code, high_code,
            torch.where(low_code != zero_point, low_column, none), torch.where(high_code != zero_point, high_column, none))

    def pinned(self, start: int, stop: int) -> torch.Tensor:
        """rows x (stop - start): True where an entry holds a range end of its group (it is never pruned)."""
        columns = None
        found = None
        for index in range(start // self.length, (stop - 1) // self.length + 1):
            state = self.states[index]
            if columns is None:
                columns = torch.arange(start, stop, device=state.scale.device)
            hit = (state.low_column[:, None] == columns) | (state.high_column[:, None] == columns)
            found = hit if found is None else found | hit
        return found

    def quantize(self, values: torch.Tensor, column: int) -> torch.Tensor:
        """A column's values on its group's grid: the range ends' entries at their codes, the rest clamped
        between them."""
        state = self.states[column // self.length]
        code = torch.round(values / state.scale) + state.zero_point
        code = torch.minimum(torch.maximum(code, state.low_code), state.high_code)
        code = torch.where(state.low_column == column, state.low_code, code)
        code = torch.where(state.high_column == column, state.high_code, code)
        return (code - state.zero_point) * state.scale + 0.0


def solve_(
    weight: torch.Tensor, hessian: torch.Tensor, *, pruning: Pruning | None = None, grid: Grid | None = None,
    damping: float = DAMPING, block_columns: int = BLOCK_COLUMNS, act_order: bool = False,
) -> torch.Tensor | None:
    """Prune and/or quantize ``weight`` (rows x columns, an nn.Linear's) in place, minimising the output error on
    inputs whose second moment is ``hessian`` (columns x columns). Returns the keep mask (None without pruning).

    Pruned entries end exactly +0.0; quantized entries exactly (code - zero_point) * scale on the grid that
    round-to-nearest derives from the result (module docstring). Unstructured pruning removes exactly
    pruned_count(sparsity, rows * columns) entries, spread over the blocks by cumulative rounding."""
    rows, columns = weight.shape
    if hessian.shape != (columns, columns):
        raise ValueError(f"hessian has shape {tuple(hessian.shape)}, the weight has {columns} input columns")
    pruning = pruning if pruning is not None and (pruning.keep is not None or pruning.sparsity > 0 or pruning.n_of_m) else None
    if pruning is None and grid is None:
        return None
    work = weight.detach().to(torch.float32).clone()
    hessian = hessian.to(work.device)
    fixed = pruning.keep.to(work.device) if pruning is not None and pruning.keep is not None else None
    order = None
    if act_order and (grid is None or grid.granularity != "group") and (pruning is None or pruning.n_of_m is None):
        # GPTQ's act-order: the inputs with the largest second moment first, while most columns can still absorb
        # their error (groups and n:m need the columns in place)
        order = torch.argsort(hessian.diagonal(), descending=True, stable=True)
        hessian, work = hessian[order][:, order], work[:, order]
        fixed = fixed[:, order] if fixed is not None else None
    inverse = inverse_hessian_factor(hessian, damping)
    keep = torch.ones_like(work, dtype=torch.bool) if pruning is not None else None
    groups = _GroupGrids(grid, columns) if grid is not None else None

    for block_start in range(0, columns, block_columns):
        block_stop = min(block_start + block_columns, columns)
        block = work[:, block_start:block_stop].clone()
        inverse_block = inverse[block_start:block_stop, block_start:block_stop]
        if groups is not None:  # every group that starts in this block, from its current values
            for group_start in groups.starts_in(block_start, block_stop):
                group_stop = min(group_start + groups.length, columns)
                known = fixed[:, group_start:group_stop] if fixed is not None else None
                groups.start(work[:, group_start:group_stop], group_start, known)
        if fixed is not None:
            keep[:, block_start:block_stop] = fixed[:, block_start:block_stop]
        elif pruning is not None and pruning.n_of_m is None:
            keep[:, block_start:block_stop] = _sparsegpt_keep(block, inverse_block, pruning, (block_start, block_stop),
                                                              rows, _pinned(groups, block_start, block_stop))
        errors = torch.zeros_like(block)
        for i in range(block_stop - block_start):
            if fixed is None and pruning is not None and pruning.n_of_m is not None and i % pruning.n_of_m[1] == 0:
                # SparseGPT's n:m choice is made every m columns, on the values corrected so far
                n, m = pruning.n_of_m
                stop = block_start + i + m
                cost = _cost(block[:, i:i + m], inverse_block.diagonal()[i:i + m], _pinned(groups, block_start + i, stop))
                keep[:, block_start + i:stop] = n_of_m_keep(cost, n, m)
            values = block[:, i]
            fixed_values = values.clone()
            if keep is not None:
                fixed_values.masked_fill_(~keep[:, block_start + i], 0.0)
            if groups is not None:
                fixed_values = groups.quantize(fixed_values, block_start + i)
                if keep is not None:
                    fixed_values.masked_fill_(~keep[:, block_start + i], 0.0)
            error = (values - fixed_values) / inverse_block[i, i]
            block[:, i:] -= error[:, None] * inverse_block[i, i:][None, :]
            block[:, i] = fixed_values
            errors[:, i] = error
        work[:, block_start:block_stop] = block
        work[:, block_stop:] -= errors @ inverse[block_start:block_stop, block_stop:]

    if keep is not None:
        work.masked_fill_(~keep, 0.0)
    if order is not None:
        restore = torch.argsort(order)
        work, keep = work[:, restore], keep[:, restore] if keep is not None else None
    with torch.no_grad():
        weight.copy_(work.to(weight.dtype))
    return keep


def _pinned(groups: _GroupGrids | None, start: int, stop: int) -> torch.Tensor | None:
    return groups.pinned(start, stop) if groups is not None else None


def _cost(values: torch.Tensor, inverse_diagonal: torch.Tensor, pinned: torch.Tensor | None) -> torch.Tensor:
    """SparseGPT's cost of pruning each entry, w^2 / [H^-1]_jj^2; entries holding a range end are never pruned."""
    cost = values.pow(2) / inverse_diagonal.pow(2)[None, :]
    return cost.masked_fill(pinned, math.inf) if pinned is not None else cost


def _sparsegpt_keep(block, inverse_block, pruning: Pruning, block_range, rows, pinned) -> torch.Tensor:
    """SparseGPT's unstructured mask for one block: exactly its share of the pruned count, cheapest first."""
    start, stop = block_range
    count = pruned_count(pruning.sparsity, rows * stop) - pruned_count(pruning.sparsity, rows * start)
    cost = _cost(block, inverse_block.diagonal(), pinned)
    return lowest_pruned_keep(cost.reshape(-1), count).reshape(block.shape)
