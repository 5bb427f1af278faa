"""Real int8 inference on CPU: every ``nn.Linear`` becomes torch's dynamic-quantized Linear.

This is not fake quantization. The weights are stored as int8 (one scale per output row) in the
packed format of a quantized CPU backend, and every matmul runs an int8 x int8 -> int32 kernel: the
activations are quantized on the fly, per call, to 8 bits (7, ``reduce_range``, as torch's module
does for x86) and the int32 result is rescaled to fp32. LayerNorms, softmax and the attention score
matmuls stay in fp32.

Token embedding tables (``quantize_embeddings_int8``) are stored the same way, int8 with one fp32 scale per
row, and a lookup dequantizes only the rows it reads: a table is a lookup, not a matmul, so this buys memory,
not speed. A table whose weight is still read elsewhere in fp32 (RoBERTa's LM head) is left as it is, since
quantizing it would save nothing; a tied output projection is an int8 Linear of its own (oneDNN/fbgemm pack
their weights in their own layout, which a lookup cannot read).

Backend ("engine"): each module's weights are packed for one engine, and the module then runs that
engine's kernel whatever the global ``torch.backends.quantized.engine`` says. ``auto`` picks oneDNN
on CPUs with AMX (Sapphire Rapids and later: its AMX int8 tiles made 128 x 1024 x 4096 products
3-5x faster than fbgemm on one core here) and torch's ``x86`` engine (fbgemm, VNNI/AVX2) elsewhere.

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

from .module_surgery import disable_attention_fast_path, is_float_linear
from .quantization import quantize

with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao on import
    warnings.simplefilter("ignore")
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

__all__ = [
    "Int8Linear", "Int8Embedding", "ENGINE_CHOICES", "int8_engine", "check_int8_supported", "quantize_linears_int8",
    "quantize_embeddings_int8", "int8_linears", "count_calls",
]


class Int8Linear(DynamicQuantizedLinear):
    """torch's dynamic-quantized int8 Linear with a repr that does not unpack the weights: fairseq's
    make_generation_fast_ formats every module's repr (into the message of an exception it catches), and unpacking
    every int8 Linear there cost 6 s of a 217M model's fairseq-generate start-up."""

    def __repr__(self):
        return f"Int8Linear(in_features={self.in_features}, out_features={self.out_features})"


# Quantized CPU engines for "auto", best first: x86 (fbgemm + oneDNN), fbgemm (x86 AVX2/AVX512), qnnpack (ARM).
ENGINES = ("x86", "fbgemm", "qnnpack")
ENGINE_CHOICES = ("auto", "x86", "fbgemm", "onednn", "qnnpack")


def _has_amx():
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe and probe())
    except RuntimeError:
        return False


def int8_engine(engine="auto"):
    """The quantized engine int8 weights get packed for here (None if this torch build has none).

    ``auto``: ``onednn`` on an AMX CPU, else the first of x86/fbgemm/qnnpack this torch supports. An explicit
    name is returned if supported, else None.
    """
    supported = torch.backends.quantized.supported_engines
    if engine == "auto":
        if _has_amx() and "onednn" in supported:
            return "onednn"
        return next((e for e in ENGINES if e in supported), None)
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"unknown int8 engine {engine!r}; allowed: {', '.join(ENGINE_CHOICES)}")
    return engine if engine in supported else None


def check_int8_supported(device="cpu", dtype=torch.float32, engine="auto"):
    """Raise ValueError (with the reason) when real int8 kernels cannot run for this device/dtype/engine."""
    if torch.device(device).type != "cpu":
        raise ValueError(f"int8 kernels run on the CPU only (got device {device!r})")
    if dtype != torch.float32:
        raise ValueError(f"int8 kernels take fp32 activations (got {dtype}); drop --fp16/--bf16")
    if int8_engine(engine) is None:
        raise ValueError(
            f"int8 engine {engine!r} is not available in this torch build "
            f"(supported: {', '.join(torch.backends.quantized.supported_engines)})"
        )


def quantize_linears_int8(model, *, per_channel=True, skip=(), engine="auto"):
    """Replace, in place, every float ``nn.Linear`` of ``model`` by an int8 dynamic-quantized Linear.

    ``per_channel``: one weight scale per output row (default; more accurate at the same speed) or one
    per matrix. ``engine``: see the module docstring (``auto``, ``x86``, ``fbgemm``, ``onednn``,
    ``qnnpack``). ``skip``: qualified module names (as in ``named_modules``) to leave in fp32. A weight
    shared with an embedding (tied output projection) is quantized as a copy; the embedding keeps fp32.
    The model must be on the CPU in fp32; it is put in eval mode (quantized modules do not train).
    Returns the list of the qualified names replaced.
    """
    first = next(model.parameters(), None)  # not a list of them all: each float weight is freed once replaced
    check_int8_supported(first.device if first is not None else "cpu",
                         first.dtype if first is not None else torch.float32, engine)
    del first
    engine = int8_engine(engine)
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    model.eval()
    replaced = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            qualified = f"{parent_name}.{name}" if parent_name else name
            if not is_float_linear(child) or qualified in skip:
                continue
            child.qconfig = qconfig
            int8 = _pack(child, engine)
            del child.qconfig
            setattr(parent, name, int8)
            replaced.append(qualified)
    disable_attention_fast_path(model)
    return replaced


def _pack(linear, engine):
    """The int8 module for float ``linear``, its weights packed for ``engine`` (the global engine is restored)."""
    previous = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # "quantize_per_channel ... deprecated": still the way to pack int8
            return Int8Linear.from_float(linear)
    finally:
        torch.backends.quantized.engine = previous


class Int8Embedding(nn.Module):
    """A token embedding stored as int8 rows, one fp32 scale per row: the symmetric per-row 8-bit grid of
    ``--quant-bits 8`` (``quantization.quantize``), its codes held as signed int8 (127 levels a side)."""

    weights_in_buffers = True  # runtime.runtime_bytes counts them

    def __init__(self, embedding):
        super().__init__()
        quantized = quantize(embedding.weight.detach().float(), 8, "symmetric", "channel")
        signed = quantized.codes.to(torch.int16) - quantized.zero_point[:, None]
        self.register_buffer("weight_int8", signed.to(torch.int8))
        self.register_buffer("scale", quantized.scale)
        self.num_embeddings, self.embedding_dim = embedding.weight.shape
        self.padding_idx = embedding.padding_idx

    def forward(self, tokens):
        return self.weight_int8[tokens].float() * self.scale[tokens].unsqueeze(-1)

    def dequantized(self):
        """The fp32 table this module looks up."""
        return self.weight_int8.float() * self.scale[:, None]

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, padding_idx={self.padding_idx}, int8 rows"


def quantize_embeddings_int8(model, *, skip=()):
    """Replace, in place, every token ``nn.Embedding`` of ``model`` by an ``Int8Embedding``, except those in
    ``skip`` (qualified names) and those whose weight another module still reads (nothing would be saved). A
    table shared by several modules (fairseq's --share-all-embeddings) stays shared. Call it after
    ``quantize_linears_int8``, which frees a tied output projection's use of the table. Returns the names replaced.
    """
    read_elsewhere = {
        id(p) for m in model.modules() if type(m) is not nn.Embedding for p in m.parameters(recurse=False)
    }
    replaced, int8_of = [], {}
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            qualified = f"{parent_name}.{name}" if parent_name else name
            if type(child) is not nn.Embedding or qualified in skip or id(child.weight) in read_elsewhere:
                continue
            if id(child) not in int8_of:
                int8_of[id(child)] = Int8Embedding(child)
            setattr(parent, name, int8_of[id(child)])
            replaced.append(qualified)
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
