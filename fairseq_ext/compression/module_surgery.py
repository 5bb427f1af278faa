"""What the compressors that act on modules share: the int8 and int4 swaps and the calibrated compressor.

Plain torch, duck-typed on fairseq's modules: no fairseq import.
"""
from torch import nn


def disable_attention_fast_path(module):
    """Make fairseq-style attention modules call their projection modules instead of reading their weights.

    Returns the number of attention modules switched. Duck-typed on ``q_proj`` + ``skip_embed_dim_check``
    (fairseq's ``MultiheadAttention``); the slow path it selects computes exactly the same function.
    """
    switched = 0
    for sub in module.modules():
        if hasattr(sub, "q_proj") and hasattr(sub, "skip_embed_dim_check"):
            sub.skip_embed_dim_check = True
            switched += 1
    return switched


def is_float_linear(module):
    return type(module) in (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)
