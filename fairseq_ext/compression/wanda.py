"""Wanda (Sun et al., 2023): prune the weights with the smallest |W_ij| * ||X_j||, compared within each output row.

||X_j|| is the L2 norm of input feature j over the calibration tokens, the square root of H_jj with H = X^T X.
No weight is updated: Wanda is a mask, cheap enough to need no solver, and strong where a few input features
carry large activations.
"""

from __future__ import annotations

import torch

from .gptq import Pruning
from .pruning import n_of_m_keep, pruned_count


def wanda_keep(weight: torch.Tensor, hessian_diagonal: torch.Tensor, sparsity: float = 0.0,
               n_of_m: tuple[int, int] | None = None) -> torch.Tensor:
    """Keep mask (True = kept) of an nn.Linear weight (rows x columns). Unstructured: exactly
    pruned_count(sparsity, rows * columns) entries, each row's share by cumulative rounding, lowest scores of the
    row first, ties by position. n_of_m=(n, m): the n lowest scores of every m consecutive inputs of a row."""
    rows, columns = weight.shape
    if hessian_diagonal.shape != (columns,):
        raise ValueError(f"{hessian_diagonal.numel()} input norms for a weight with {columns} input columns")
    score = weight.detach().abs().float() * hessian_diagonal.float().clamp(min=0).sqrt()[None, :]
    if n_of_m is not None:
        return n_of_m_keep(score, *n_of_m)
    ends = torch.tensor([pruned_count(sparsity, columns * row) for row in range(rows + 1)])
    per_row = (ends[1:] - ends[:-1]).to(score.device)
    rank = torch.empty_like(score, dtype=torch.long)
    order = torch.sort(score, dim=1, stable=True).indices
    rank.scatter_(1, order, torch.arange(columns, device=score.device).expand(rows, columns).contiguous())
    return rank >= per_row[:, None]


def wanda_pruning(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, n_of_m: tuple[int, int] | None,
                  magnitude_keep: torch.Tensor | None) -> Pruning:
    """Wanda as the calibrated compressor runs it: a fixed mask from the inputs' norms (the diagonal of H)."""
    return Pruning(keep=wanda_keep(weight, hessian.diagonal(), sparsity, n_of_m))
