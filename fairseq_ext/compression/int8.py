"""Real int8 inference on CPU: every ``nn.Linear`` becomes torch's dynamic-quantized Linear.

This is not fake quantization. The weights are stored as int8 (one scale per output row) in the
packed format of the quantized CPU backend (fbgemm / oneDNN behind torch's ``x86`` engine), and
every matmul runs an int8 x int8 -> int32 kernel: the activations are quantized on the fly, per
call, to 8 bits (7 on x86, ``reduce_range``) and the int32 result is rescaled to fp32. Embeddings,
LayerNorms, softmax and the attention score matmuls stay in fp32.

fairseq's ``MultiheadAttention`` has a trap: when it is called without an incremental state
(the encoder, and everything in training) it takes a fast path through
``F.multi_head_attention_forward`` that reads ``q_proj.weight`` ... as tensors instead of calling
the projection modules, which would silently bypass (or, for a quantized module whose ``weight``
is a method, crash on) the int8 kernels. ``quantize_linears_int8`` therefore turns that fast path
off on every attention module it touches (fairseq's own switch, ``skip_embed_dim_check``), so the
encoder, the decoder's incremental self-attention and the cross-attention all call their
(quantized) ``q_proj``/``k_proj``/``v_proj``/``out_proj``. ``count_calls`` proves it.

Plain torch, duck-typed: no fairseq import.
"""

import contextlib
import warnings
from collections import Counter

import torch
from torch import nn

with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao on import
    warnings.simplefilter("ignore")
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

__all__ = [
    "Int8Linear", "int8_engine", "check_int8_supported", "quantize_linears_int8", "int8_linears",
    "count_calls", "disable_attention_fast_path",
]

# Preferred quantized CPU engines, best first: x86 (fbgemm + oneDNN), fbgemm (x86 AVX2/AVX512), qnnpack (ARM).
ENGINES = ("x86", "fbgemm", "qnnpack")


def int8_engine():
    """The quantized engine that int8 kernels will run on here (None if this torch build has none)."""
    supported = torch.backends.quantized.supported_engines
    return next((e for e in ENGINES if e in supported), None)


def check_int8_supported(device="cpu", dtype=torch.float32):
    """Raise ValueError (with the reason) when real int8 kernels cannot run for this device/dtype."""
    if torch.device(device).type != "cpu":
        raise ValueError(f"int8 kernels run on the CPU only (got device {device!r})")
    if dtype != torch.float32:
        raise ValueError(f"int8 kernels take fp32 activations (got {dtype}); drop --fp16/--bf16")
    if int8_engine() is None:
        raise ValueError(
            f"this torch build has no quantized CPU engine (supported: {torch.backends.quantized.supported_engines})"
        )


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


def _is_float_linear(module):
    return type(module) in (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)


def quantize_linears_int8(model, *, per_channel=True, skip=()):
    """Replace, in place, every float ``nn.Linear`` of ``model`` by an int8 dynamic-quantized Linear.

    ``per_channel``: one weight scale per output row (default; more accurate at the same speed) or one
    per matrix. ``skip``: qualified module names (as in ``named_modules``) to leave in fp32. A weight
    shared with an embedding (tied output projection) is quantized as a copy; the embedding keeps fp32.
    The model must be on the CPU in fp32; it is put in eval mode (quantized modules do not train).
    Returns the list of the qualified names replaced.
    """
    params = list(model.parameters())
    check_int8_supported(params[0].device if params else "cpu", params[0].dtype if params else torch.float32)
    engine = int8_engine()
    if torch.backends.quantized.engine != engine:
        torch.backends.quantized.engine = engine
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    model.eval()
    replaced = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            qualified = f"{parent_name}.{name}" if parent_name else name
            if not _is_float_linear(child) or qualified in skip:
                continue
            child.qconfig = qconfig
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # "quantize_per_channel ... deprecated": still the way to pack int8
                int8 = Int8Linear.from_float(child)
            del child.qconfig
            setattr(parent, name, int8)
            replaced.append(qualified)
    disable_attention_fast_path(model)
    return replaced


def int8_linears(model):
    """``{qualified name: module}`` of the int8 Linears in ``model``."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Int8Linear)}


@contextlib.contextmanager
def count_calls(model, module_type=Int8Linear):
    """Count forward calls of every ``module_type`` submodule: ``with count_calls(m) as calls: ...`` then
    ``calls[qualified_name]``. The proof that the int8 kernels (not a weight-reading fast path) ran."""
    calls = Counter()
    handles = [
        m.register_forward_hook(lambda mod, inp, out, name=name: calls.update([name]))
        for name, m in model.named_modules()
        if isinstance(m, module_type)
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()
