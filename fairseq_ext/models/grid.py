"""Generic builder for the model-size grids of "Train Large, Then Compress" (Li et al., 2020).

A grid is plain data (a list of depths and a list of widths). ``register_grid`` turns every
(depth, width) point into a named fairseq architecture on a stock fairseq model; roberta_grid.py
and transformer_grid.py are the named presets. Every arch function only fills defaults
(``safe_getattr``), so a command-line value always wins and fairseq re-running the function when
it loads a checkpoint changes nothing.
"""

import argparse

import torch
from fairseq.data import Dictionary
from fairseq.models import (
    ARCH_CONFIG_REGISTRY,
    ARCH_MODEL_NAME_REGISTRY,
    build_model,
    register_model_architecture,
)
from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from fairseq.utils import safe_getattr
from torch.overrides import TorchFunctionMode

HEAD_DIM = 64  # attention heads = width / HEAD_DIM
FFN_MULT = 4  # FFN inner dimension = FFN_MULT * width

# arch name -> (depth, width) of every registered grid point, for scripts/arch_table.py and the tests.
GRID_ARCHS = {}


def fill_size_defaults(args, prefix, depth, width):
    """Default the layers/width/FFN/heads of one stack ("encoder" or "decoder") of a transformer.

    FFN and heads follow the width actually in use, so overriding only ``--encoder-embed-dim``
    keeps the grid's 64-dim heads and 4x FFN.
    """
    setattr(args, f"{prefix}_layers", safe_getattr(args, f"{prefix}_layers", depth))
    width = safe_getattr(args, f"{prefix}_embed_dim", width)
    setattr(args, f"{prefix}_embed_dim", width)
    setattr(args, f"{prefix}_ffn_embed_dim", safe_getattr(args, f"{prefix}_ffn_embed_dim", FFN_MULT * width))
    setattr(args, f"{prefix}_attention_heads", safe_getattr(args, f"{prefix}_attention_heads", width // HEAD_DIM))


def register_grid(model_name, name_format, depths, widths, fill_defaults):
    """Register ``name_format.format(depth=, width=)`` on fairseq model ``model_name`` for every point.

    ``fill_defaults(args, depth, width)`` is the preset body. Idempotent: a name already registered
    on the same model (a re-imported or reloaded module) only gets its function refreshed, instead
    of fairseq's "Cannot register duplicate model architecture" error; a clash with another
    model's arch of the same name still raises.
    """
    for depth in depths:
        for width in widths:
            name = name_format.format(depth=depth, width=width)

            def arch(args, depth=depth, width=width):
                fill_defaults(args, depth, width)

            arch.__name__ = arch.__qualname__ = name
            if ARCH_MODEL_NAME_REGISTRY.get(name) == model_name:
                ARCH_CONFIG_REGISTRY[name] = arch
            else:
                register_model_architecture(model_name, name)(arch)
            GRID_ARCHS[name] = (depth, width)


def vocab_dictionary(vocab_size):
    """A fairseq Dictionary of exactly ``vocab_size`` entries (the 4 specials, <mask>, fillers).

    <mask> is included because the masked_lm task adds it to its dictionary: with it already
    present the model sees exactly ``vocab_size`` entries for every task.
    """
    dictionary = Dictionary()
    dictionary.add_symbol("<mask>")
    while len(dictionary) < vocab_size:
        dictionary.add_symbol(f"tok{len(dictionary)}")
    return dictionary


class _CpuCallKeepsMeta(TorchFunctionMode):
    """Makes ``.cpu()`` of a meta tensor a no-op.

    fairseq's init_bert_params (RoBERTa) draws weights as ``data.cpu().normal_()`` to keep the RNG
    stream independent of the device, which fails on meta tensors ("no data"); with ``.cpu()``
    staying on meta the whole stock build runs unchanged and allocates nothing.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.cpu and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def build_for_vocab(arch, vocab_size, device="cpu", tokens_per_sample=512, **overrides):
    """Build the real fairseq model of ``arch`` (grid or stock) for a ``vocab_size`` dictionary.

    Goes through ``fairseq.models.build_model`` exactly like fairseq-train: the registered arch
    function fills the defaults, then the stock model class builds. ``overrides`` play the part
    of command-line values. ``device="meta"`` allocates no memory, which is how the 700M-parameter
    grid points are counted in seconds. The roberta model is built for the masked_lm task with
    ``tokens_per_sample`` learned positions (512 as in the RoBERTa recipe; masked_lm's own default
    is 1024), the transformer for translation with a joined dictionary.
    """
    dictionary = vocab_dictionary(vocab_size)
    model_name = ARCH_MODEL_NAME_REGISTRY[arch]
    if model_name == "roberta":
        task = MaskedLMTask(MaskedLMConfig(tokens_per_sample=tokens_per_sample), dictionary)
    elif model_name == "transformer":
        task = TranslationTask(TranslationConfig(), dictionary, dictionary)
    else:
        raise ValueError(f"{arch} is a {model_name} arch; only roberta and transformer are supported")
    with torch.device(device), _CpuCallKeepsMeta():
        return build_model(argparse.Namespace(arch=arch, **overrides), task)
