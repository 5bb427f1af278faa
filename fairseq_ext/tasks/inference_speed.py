"""The inference-speed flags of the ``compressed_*`` tasks: structured pruning, real int8 and int4 kernels.

- ``--prune-heads F`` / ``--prune-ffn F``: remove the fraction F of the attention heads of every attention module /
  of the FFN neurons of every layer, lowest L2 norm first, so the matrices really shrink (fairseq_ext.compression.
  structured).
- ``--int8-kernels`` (``--int8-engine``): replace every ``nn.Linear`` by torch's dynamic-quantized int8 Linear, so
  the matmuls run int8 kernels on the CPU, and store the token embedding tables in int8 (fairseq_ext.compression.
  int8).
- ``--int4-kernels``: replace every Linear and token embedding that ``--quant-bits 2..4`` quantized by torch's CPU
  int4 weight-only modules holding the same codes (fairseq_ext.compression.int4).

They act on a loaded checkpoint (fairseq-generate, fairseq-interactive, fairseq-validate), in the load hook of
``CompressionTaskMixin``, after ``--prune-sparsity``/``--quant-bits``: structured pruning first, int8 or int4
last. They are refused in fairseq-train (the shrunk or int8 model cannot train or be checkpointed as the arch it
claims to be), and an int8 or int4 model refuses to be moved to a GPU or cast to fp16/bf16 (what --fp16/--bf16 and
the absence of --cpu on a CUDA machine do right after loading), with the flag to change.
"""
import torch
from torch import nn

from fairseq_ext.compression.int4 import MAX_BITS, quantize_model_int4
from fairseq_ext.compression.int8 import (
    int8_engine,
    quantize_embeddings_int8,
    quantize_linears_int8,
)
from fairseq_ext.compression.quantization import quantizable_weights
from fairseq_ext.compression.structured import structured_prune

DEVICE_MESSAGE = ("{flag} runs its kernels on the CPU from a float32 model: add --cpu (when a GPU is visible) and drop "
                  "--fp16/--bf16")


def guard_cpu_fp32(model, kernels_flag):
    """Make ``model.cuda()``/``.half()``/``.to(...)`` raise the flag-level message instead of breaking the kernels."""
    original = model._apply

    def _apply(fn, *args, **kwargs):
        probe = fn(torch.zeros(1))
        if probe.device.type != "cpu" or probe.dtype != torch.float32:
            raise ValueError(DEVICE_MESSAGE.format(flag=kernels_flag))
        return original(fn, *args, **kwargs)

    model._apply = _apply


def _check_cpu_fp32(model, kernels_flag):
    first = next(model.parameters(), None)
    if first is not None and (first.device.type != "cpu" or first.dtype != torch.float32):
        raise ValueError(DEVICE_MESSAGE.format(flag=kernels_flag))


def apply_speed_flags(v, model, spec):
    """Structured pruning, then int8 or int4 kernels, in place; returns the figures for the ``compressed`` log line.
    ``spec``: the compression the model went through (int4 modules hold the codes of the weights it quantized)."""
    figures = {}
    if v["prune_heads"] > 0 or v["prune_ffn"] > 0:
        report = structured_prune(model, heads=v["prune_heads"], ffn=v["prune_ffn"])
        for kind in ("heads", "ffn"):
            before = sum(b for b, _ in report[kind].values())
            after = sum(a for _, a in report[kind].values())
            figures[f"{kind}_kept"] = f"{after}/{before}"
        figures["params_after_structured"] = sum(p.numel() for p in model.parameters())
    if v["int8_kernels"]:
        _check_cpu_fp32(model, "--int8-kernels")
        figures["int8_linears"] = len(quantize_linears_int8(model, engine=v["int8_engine"]))
        figures["int8_embeddings"] = len(quantize_embeddings_int8(model))
        figures["int8_engine"] = int8_engine(v["int8_engine"])
        guard_cpu_fp32(model, "--int8-kernels")
    if v["int4_kernels"]:
        _check_cpu_fp32(model, "--int4-kernels")
        if not (spec.quantizes and spec.bits <= MAX_BITS):
            raise ValueError(f"--int4-kernels runs weights quantized at 2..{MAX_BITS} bits: add --quant-bits 2, 3 or "
                             f"{MAX_BITS} (this checkpoint holds float weights), or load a packed .fxc of them")
        quantized = quantizable_weights(model, include_embeddings=spec.quantize_embeddings)
        try:
            replaced = quantize_model_int4(model, quantized, spec.bits, spec.scheme, spec.granularity, spec.group_size)
        except ValueError as error:
            raise ValueError(f"--int4-kernels: {error}") from None
        figures.update(int4_figures(model, replaced))
        guard_cpu_fp32(model, "--int4-kernels")
    return figures


def int4_figures(model, replaced):
    """The int4 counts of the ``compressed`` line: Linears and token tables on int4 codes, and float Linears left."""
    float_linears = sum(1 for m in model.modules() if isinstance(m, nn.Linear))
    return {"int4_linears": len(replaced["linears"]), "int4_embeddings": len(replaced["embeddings"]),
            "float_linears": float_linears}
