"""Build a model straight into int4 modules from a packed file's codes, never holding its weights in float32.

On a model built by ``meta_build.weights_on_meta()``, ``load_int4_state(model, state_dict)`` takes the packed
file's state (``load_compressed(..., keep_quantized_bits=4)``): every Linear whose weight is stored at <= 4 bits
becomes an Int4Linear of those codes, every token Embedding too (a tied table reads its projection's
codes), each decoded one tensor at a time; every other meta parameter becomes the state's own tensor (no copy). It
removes the entries it consumed, so the caller's ``load_state_dict`` loads the rest as usual.

Plain torch, duck-typed: no fairseq import.
"""

from __future__ import annotations

from torch import nn

from .int4 import CodedWeight, replace_with_int4
from .meta_build import assign_meta_parameters
from .packed import StoredQuantized

__all__ = ["load_int4_state"]


def load_int4_state(model: nn.Module, state_dict: dict) -> dict[str, list[str]]:
    """Give ``model``'s meta parameters their values from ``state_dict`` (see the module docstring), in place.
    Returns replace_with_int4's {"linears": [...], "embeddings": [...]}; ValueError listing every weight the int4
    kernels cannot hold, before any change."""
    meta = [name for name, p in model.named_parameters(remove_duplicate=False) if p.is_meta]
    coded = {}
    for name in meta:
        entry = state_dict.get(name)
        if isinstance(entry, StoredQuantized) and not any(entry is weight.grid for weight in coded.values()):
            coded[name] = CodedWeight(entry, entry.quantized, entry.dense)
    result = replace_with_int4(
        model, coded, lambda module, names: next((state_dict[q[:-len("weight")] + "bias"] for q in names
                                                  if q[:-len("weight")] + "bias" in state_dict), None))
    for name in result["replaced_weights"]:
        state_dict.pop(name, None)
    for names, value in result["float_weights"]:
        state_dict.update((q, value) for q in names if q in state_dict)
    for name, entry in state_dict.items():  # codes of a tensor no Linear or Embedding holds: as a float
        if isinstance(entry, StoredQuantized):
            state_dict[name] = entry.dense()
    assign_meta_parameters(model, state_dict)  # every other meta parameter: the state's own tensor
    return {"linears": result["linears"], "embeddings": result["embeddings"]}
