"""Structured pruning that really shrinks the matrices: whole attention heads and whole FFN neurons.

Unlike unstructured (magnitude) pruning, which zeroes single weights and needs sparse kernels to pay off,
this removes rows and columns, so the model keeps running on dense kernels, just smaller ones:

* attention heads: head ``h`` owns rows ``h*d:(h+1)*d`` of ``q_proj``/``k_proj``/``v_proj`` (weights and
  biases) and the same columns of ``out_proj``. Pruning keeps the ``num_heads - round(F * num_heads)``
  heads (at least one) of largest L2 norm over all of these, builds smaller ``nn.Linear``s from the kept
  slices and sets ``num_heads``/``embed_dim`` to match. fairseq's ``MultiheadAttention`` then has to
  take its generic path (its ``F.multi_head_attention_forward`` fast path checks the query width
  against ``embed_dim``): ``skip_embed_dim_check`` is set, fairseq's own switch for pruned heads.
* FFN neurons: neuron ``i`` owns row ``i`` of ``fc1`` (+ bias) and column ``i`` of ``fc2``. The
  ``ffn - round(F * ffn)`` neurons of largest L2 norm are kept.

A removed head or neuron whose parameters are all zero contributed exactly nothing, so pruning it leaves
the outputs unchanged; otherwise the kept ones compute exactly what they computed before.

Plain torch, duck-typed on fairseq's attribute names (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``,
``num_heads``, ``head_dim``; ``fc1``, ``fc2``): no fairseq import.
"""

import math

import torch
from torch import nn

from .pruning import pruned_count

__all__ = [
    "check_fraction", "kept_count", "attention_modules", "ffn_modules", "head_norms", "neuron_norms",
    "prune_heads_of", "prune_neurons_of", "prune_attention_heads", "prune_ffn_neurons", "structured_prune",
]


def check_fraction(value, name="fraction"):
    """``value`` as a float in [0, 1), or ValueError naming ``name``."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= fraction < 1.0 or math.isnan(fraction):
        raise ValueError(f"{name} must be in [0, 1) (the fraction of heads/neurons removed), got {value!r}")
    return fraction


def kept_count(total, fraction):
    """How many of ``total`` units survive pruning a ``fraction`` of them: total - pruned_count(F, total), >= 1
    (the rounding of every "fraction F of n" in this package)."""
    return max(1, total - pruned_count(fraction, total))


def attention_modules(model):
    """``[(name, module)]`` of the multi-head attention modules (fairseq ``MultiheadAttention`` shape)."""
    names = ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads", "head_dim")
    return [(n, m) for n, m in model.named_modules() if all(hasattr(m, a) for a in names)]


def ffn_modules(model):
    """``[(name, module)]`` of the modules holding an ``fc1`` -> activation -> ``fc2`` feed-forward block."""
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(getattr(m, "fc1", None), nn.Module) and isinstance(getattr(m, "fc2", None), nn.Module)
    ]


def _check_linear(linear, where):
    if type(linear) is not nn.Linear:
        raise TypeError(f"{where} is a {type(linear).__name__}; structured pruning needs a float nn.Linear "
                        "(prune before int8 conversion)")


def _slice_linear(linear, rows=None, cols=None):
    """A new nn.Linear holding ``linear``'s weight[rows][:, cols] (and bias[rows]); same device/dtype."""
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else None
    if rows is not None:
        weight = weight.index_select(0, rows)
        bias = bias.index_select(0, rows) if bias is not None else None
    if cols is not None:
        weight = weight.index_select(1, cols)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.train(linear.training)
    return new


def head_norms(attn):
    """L2 norm, per head, of everything the head owns: its q/k/v rows and biases and its out_proj columns."""
    h, d = attn.num_heads, attn.head_dim
    squares = torch.zeros(h, dtype=torch.float64, device=attn.q_proj.weight.device)
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        squares += proj.weight.detach().double().pow(2).view(h, d, -1).sum((1, 2))
        if proj.bias is not None:
            squares += proj.bias.detach().double().pow(2).view(h, d).sum(1)
    squares += attn.out_proj.weight.detach().double().pow(2).view(-1, h, d).sum((0, 2))
    return squares.sqrt()


def neuron_norms(block):
    """L2 norm, per FFN neuron, of its fc1 row (+ bias) and its fc2 column."""
    squares = block.fc1.weight.detach().double().pow(2).sum(1) + block.fc2.weight.detach().double().pow(2).sum(0)
    if block.fc1.bias is not None:
        squares += block.fc1.bias.detach().double().pow(2)
    return squares.sqrt()


def _top(norms, keep):
    """Indices of the ``keep`` largest norms, in their original order (ties: the lower index wins)."""
    order = sorted(range(len(norms)), key=lambda i: (-float(norms[i]), i))
    return torch.tensor(sorted(order[:keep]), dtype=torch.long, device=norms.device)


def prune_heads_of(attn, keep_heads, name="attention"):
    """Keep only heads ``keep_heads`` (indices) of one attention module, shrinking its projections."""
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        _check_linear(getattr(attn, proj), f"{name}.{proj}")
    h, d = attn.num_heads, attn.head_dim
    if attn.q_proj.out_features != h * d:
        raise ValueError(f"{name}: q_proj has {attn.q_proj.out_features} outputs, expected num_heads*head_dim={h * d}")
    keep_heads = torch.as_tensor(keep_heads, dtype=torch.long).sort().values
    device = attn.q_proj.weight.device
    dims = (keep_heads.to(device)[:, None] * d + torch.arange(d, device=device)[None, :]).reshape(-1)
    attn.q_proj = _slice_linear(attn.q_proj, rows=dims)
    attn.k_proj = _slice_linear(attn.k_proj, rows=dims)
    attn.v_proj = _slice_linear(attn.v_proj, rows=dims)
    attn.out_proj = _slice_linear(attn.out_proj, cols=dims)
    attn.num_heads = len(keep_heads)
    attn.embed_dim = attn.num_heads * d  # fairseq reshapes the heads' output to (T, B, embed_dim)
    if hasattr(attn, "skip_embed_dim_check"):
        attn.skip_embed_dim_check = True  # the query keeps the model width, != embed_dim now
    return attn


def prune_neurons_of(block, keep_neurons, name="ffn"):
    """Keep only FFN neurons ``keep_neurons`` (indices) of one fc1/fc2 block."""
    _check_linear(block.fc1, f"{name}.fc1")
    _check_linear(block.fc2, f"{name}.fc2")
    if block.fc1.out_features != block.fc2.in_features:
        raise ValueError(f"{name}: fc1 has {block.fc1.out_features} outputs but fc2 {block.fc2.in_features} inputs")
    if getattr(block, "ffn_layernorm", None) is not None:
        raise ValueError(f"{name} normalizes its FFN activations (ffn_layernorm / --scale-fc): removing neurons "
                         "would change the others' normalization; structured FFN pruning does not support it")
    keep_neurons = torch.as_tensor(keep_neurons, dtype=torch.long, device=block.fc1.weight.device).sort().values
    block.fc1 = _slice_linear(block.fc1, rows=keep_neurons)
    block.fc2 = _slice_linear(block.fc2, cols=keep_neurons)
    return block


def prune_attention_heads(model, fraction):
    """Remove the ``fraction`` of lowest-norm heads from every attention module of ``model``, in place.

    Returns ``{module name: (heads before, heads after)}``.
    """
    fraction = check_fraction(fraction, "head pruning fraction")
    report = {}
    for name, attn in attention_modules(model):
        _check_linear(attn.q_proj, f"{name}.q_proj")
        before = attn.num_heads
        keep = kept_count(before, fraction)
        if keep < before:
            prune_heads_of(attn, _top(head_norms(attn), keep), name)
        report[name] = (before, attn.num_heads)
    return report


def prune_ffn_neurons(model, fraction):
    """Remove the ``fraction`` of lowest-norm FFN neurons from every fc1/fc2 block of ``model``, in place.

    Returns ``{module name: (neurons before, neurons after)}``.
    """
    fraction = check_fraction(fraction, "FFN pruning fraction")
    report = {}
    for name, block in ffn_modules(model):
        _check_linear(block.fc1, f"{name}.fc1")
        before = block.fc1.out_features
        keep = kept_count(before, fraction)
        if keep < before:
            prune_neurons_of(block, _top(neuron_norms(block), keep), name)
        report[name] = (before, block.fc1.out_features)
    return report


def structured_prune(model, heads=0.0, ffn=0.0):
    """Both prunings; returns ``{"heads": ..., "ffn": ...}`` reports (see the two functions)."""
    return {"heads": prune_attention_heads(model, heads), "ffn": prune_ffn_neurons(model, ffn)}
