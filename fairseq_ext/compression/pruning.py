"""Unstructured magnitude pruning: which weights are prunable, their masks, and keeping them at zero."""

from __future__ import annotations

import math

import torch
from torch import nn

from .magnitude_selection import keep_masks
from .spec import SCOPES, choice_problem, fraction_problem, raise_problems
from .tensors import flat_numpy, linear_and_embedding_weights

NOTHING_PRUNABLE = (
    "nothing prunable: prunable tensors are nn.Linear weight matrices, plus nn.Embedding weights "
    "with prune_embeddings=True (never biases or LayerNorm)"
)


def prunable_weights(model: nn.Module, include_embeddings: bool = False) -> dict[str, nn.Parameter]:
    return linear_and_embedding_weights(model, include_embeddings)


def pruned_count(sparsity: float, numel: int) -> int:
    """How many of numel entries a sparsity prunes: the nearest integer, halves rounded up."""
    return math.floor(sparsity * numel + 0.5)


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """Keep masks (True = kept, on each weight's device) that prune exactly pruned_count(sparsity, n)
    of the smallest-magnitude entries: n over all weights together for scope "global", per weight
    for "layer". Ties go by flat position (earlier first), so the masks are reproducible."""
    problems = [fraction_problem("sparsity", sparsity), choice_problem("scope", scope, SCOPES)]
    if not weights:
        problems.append(NOTHING_PRUNABLE)
    raise_problems("pruning", [p for p in problems if p])
    groups = [list(weights)] if scope == "global" else [[name] for name in weights]
    masks = {}
    for names in groups:
        flats = [flat_numpy(weights[name]) for name in names]
        n_prune = pruned_count(sparsity, sum(flat.size for flat in flats))
        for name, keep in zip(names, keep_masks(flats, n_prune)):
            weight = weights[name]
            masks[name] = torch.from_numpy(keep).view(weight.shape).to(weight.device)
    return masks


def apply_masks(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    """Zero (+0.0) the pruned entries in place; weights without a mask are left alone."""
    problems = [f"mask {name!r} matches no weight" for name in masks if name not in weights]
    problems += [
        f"mask {name!r} has shape {tuple(mask.shape)}, weight has {tuple(weights[name].shape)}"
        for name, mask in masks.items()
        if name in weights and mask.shape != weights[name].shape
    ]
    raise_problems("masks", problems)
    with torch.no_grad():
        for name, mask in masks.items():
            weights[name].masked_fill_(~mask.to(weights[name].device), 0)
