"""Which tensors of a model compression touches, and how tied tensors are counted once.

fairseq ties the decoder's output projection (an nn.Linear) to the embedding matrix, and with
--share-all-embeddings also the encoder's embedding: one Parameter reached under several names.
Such a parameter is an embedding wherever else it is reached, so the embedding flags decide its
fate, and it is stored and counted once under its first state_dict name.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# Entries per step of the chunked numpy loops: a step's temporaries stay in cache, which about
# halves the time of these memory-bound passes.
CHUNK = 1 << 17


def linear_and_embedding_weights(model: nn.Module, include_embeddings: bool) -> dict[str, nn.Parameter]:
    """2-D weights of nn.Linear modules, plus nn.Embedding weights when asked; one entry per Parameter,
    under its first name in model.named_parameters() (which is also its first state_dict key)."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    linear_ids = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, nn.Linear) and isinstance(m.weight, torch.Tensor) and m.weight.dim() == 2
    }
    chosen = (linear_ids - embedding_ids) | (embedding_ids if include_embeddings else set())
    return {name: p for name, p in model.named_parameters() if id(p) in chosen}


def storage_signature(tensor: torch.Tensor) -> tuple:
    """Equal for two tensors exactly when they are the same view of the same memory (a tie)."""
    return (tensor.device, tensor.dtype, tensor.data_ptr(), tuple(tensor.shape), tensor.stride())


def unique_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(first key -> tensor for each distinct tensor of the state_dict, alias key -> first key)."""
    canonical: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first_key: dict[tuple, str] = {}
    not_tensors = []
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            not_tensors.append(key)
            continue
        # Empty tensors all share data_ptr 0: never treat them as ties.
        signature = storage_signature(value) if value.numel() else ("empty", key)
        if signature in first_key:
            aliases[key] = first_key[signature]
        else:
            first_key[signature] = key
            canonical[key] = value
    if not_tensors:
        raise ValueError(f"state_dict entries that are not tensors cannot be compressed: {', '.join(not_tensors)}")
    return canonical, aliases


def flat_numpy(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's values as a flat numpy array: a view when the tensor is a contiguous CPU
    float16/32/64 tensor, else a float32 copy. numpy runs the heavy loops of this package: torch's
    thread pool costs more than it gains on the few, often shared, cores of a CPU job."""
    tensor = tensor.detach()
    if tensor.device.type == "cpu" and tensor.dtype in (torch.float16, torch.float32, torch.float64) and tensor.is_contiguous():
        return tensor.view(-1).numpy()
    return tensor.to("cpu", torch.float32).reshape(-1).numpy()


def is_numpy_float32(tensor: torch.Tensor) -> bool:
    """Whether in-place numpy work on flat_numpy(tensor) writes through to the tensor in float32."""
    return tensor.device.type == "cpu" and tensor.dtype == torch.float32 and tensor.is_contiguous()


def bit_patterns(values: torch.Tensor) -> np.ndarray:
    """Flat unsigned view of the raw bits (-0.0 is not zero here, so a load can restore it)."""
    flat = values.detach().reshape(-1).cpu()
    signed = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()]
    raw = flat.view(signed).numpy()
    return raw.view(f"u{raw.itemsize}")


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """{name: how many NaN or infinite entries} of the floating-point tensors that hold any."""
    counts = {name: int((~torch.isfinite(t.detach())).sum()) for name, t in tensors.items()
              if t.is_floating_point() and t.device.type != "meta"}
    return {name: count for name, count in counts.items() if count}
