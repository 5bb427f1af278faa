"""Shape, exact parameter count, training FLOPs per token and weight memory of a grid arch's real fairseq model.

Every row is the REAL fairseq model of a registered arch, built for a ``vocab_size`` dictionary on the meta device
(exact shapes, no memory, the 760M-parameter roberta_d24_h1536 in a fraction of a second), so the counts are exactly
those of fairseq-train's model. Needs fairseq (it builds the models); used by scripts/arch_table.py (the table) and
scripts/bench_train.py (MFU).

Embedding parameters are the token and learned position embeddings plus the output projection (tied to the token
embedding by default, so usually counted once); everything else is non-embedding.

Training FLOPs per token (forward + backward = 3 x forward; a multiply-add is 2 FLOPs):

    6 * (N - H)  +  6 * f * (H + d*V)  +  12 * A * n * d

    N    non-embedding parameters: each weight is used once per token (Kaplan et al., 2020).
    H    the non-embedding part of the output head, d*V its vocabulary projection (the tied
         embedding matrix: not in N, yet a matmul for every predicted token). f = fraction of
         positions that go through the head: 1 for translation; for RoBERTa masked_lm's
         --mask-prob (0.15), as its training projects only the masked tokens.
    A*n*d  attention scores (QK^T) and weighted sum (AV) over n = seq_len positions of width d,
         for each of the A attention layers: 2 matmuls x 2 FLOPs x n x d forward.
    Translation counts per target token assuming |source| = |target| = n, so encoder and decoder
    each run once per target token: N covers both, A = encoder layers + 2 x decoder layers
    (decoder self- and cross-attention), and the full n x n score matrix is counted (fairseq
    computes it, masked or not).

Memory is the weights alone (no gradients, optimizer state or activations) in MiB.
"""

import csv
import fnmatch
import io
import json
import re

from fairseq.models import ARCH_MODEL_NAME_REGISTRY
from fairseq.tasks.masked_lm import MaskedLMConfig
from torch import nn

from .grid import GRID_ARCHS, build_for_vocab  # registered: importing fairseq_ext.models loads fairseq_ext.plugin

DEFAULT_VOCAB = {"roberta": 50265, "transformer": 32000}  # RoBERTa's GPT-2 BPE; a 32k joined En-Fr BPE
# roberta: the RoBERTa recipe's --tokens-per-sample, which also sets its learned positions (seq_len + 2);
# translation: an assumed typical WMT sentence in BPE tokens (sinusoidal positions have no parameters).
DEFAULT_SEQ_LEN = {"roberta": 512, "transformer": 32}
COLUMNS = [
    "arch", "depth", "width", "heads", "ffn", "vocab", "params", "embedding_params",
    "non_embedding_params", "seq_len", "train_gflops_per_token", "fp32_mib", "fp16_mib",
]
FORMATS = ("md", "csv", "json")


def numel(params):
    """Elements of the distinct tensors in ``params`` (a tied weight counts once)."""
    return sum(p.numel() for p in {id(p): p for p in params}.values())


def describe(arch, vocab_size=None, seq_len=None):
    """One row of the table for ``arch`` ({column: value}, COLUMNS): its real fairseq model, built on the meta
    device. ``vocab_size`` and ``seq_len`` default per model (DEFAULT_VOCAB, DEFAULT_SEQ_LEN)."""
    model_name = ARCH_MODEL_NAME_REGISTRY[arch]
    vocab_size = vocab_size or DEFAULT_VOCAB[model_name]
    seq_len = seq_len or DEFAULT_SEQ_LEN[model_name]
    model = build_for_vocab(arch, vocab_size, device="meta", tokens_per_sample=seq_len)
    args = model.args
    if model_name == "roberta":
        head, head_fraction = model.encoder.lm_head, MaskedLMConfig.mask_prob
        attention_layers = args.encoder_layers
    else:
        head, head_fraction = model.decoder.output_projection, 1.0
        attention_layers = args.encoder_layers + 2 * args.decoder_layers
    vocab_projection = head.weight
    embedding = [p for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()]
    embedding_params = numel(embedding + [vocab_projection])
    params = numel(model.parameters())
    head_non_embedding = numel(head.parameters()) - vocab_projection.numel()
    width = args.encoder_embed_dim
    flops = (
        6 * (params - embedding_params - head_non_embedding)
        + 6 * head_fraction * (head_non_embedding + vocab_projection.numel())
        + 12 * attention_layers * seq_len * width
    )
    return {
        "arch": arch,
        "depth": args.encoder_layers,
        "width": width,
        "heads": args.encoder_attention_heads,
        "ffn": args.encoder_ffn_embed_dim,
        "vocab": vocab_size,
        "params": params,
        "embedding_params": embedding_params,
        "non_embedding_params": params - embedding_params,
        "seq_len": seq_len,
        "train_gflops_per_token": round(flops / 1e9, 3),
        "fp32_mib": round(4 * params / 2**20, 1),
        "fp16_mib": round(2 * params / 2**20, 1),
    }


def train_flops_per_token(arch, vocab_size, seq_len):
    """Training FLOPs per token of ``arch`` (the formula above) for a mean sequence length ``seq_len`` (rounded,
    at least 1)."""
    return describe(arch, vocab_size=vocab_size, seq_len=max(1, round(seq_len)))["train_gflops_per_token"] * 1e9


def matching_archs(pattern):
    """Grid archs matching ``pattern`` as a glob on the whole name or, when no name does, as a regex
    searched anywhere in the name (a glob like ``roberta_d1*`` read as a regex would match every
    roberta arch, so the glob reading comes first). Every grid arch for ``None``."""
    if pattern is None:
        return list(GRID_ARCHS)
    by_glob = fnmatch.filter(GRID_ARCHS, pattern)
    if by_glob:
        return by_glob
    try:
        return [arch for arch in GRID_ARCHS if re.search(pattern, arch)]
    except re.error:
        return []


def format_table(rows, fmt="md"):
    """``rows`` (describe's) as text: a markdown table (integers with thousands separators), CSV or JSON."""
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    if fmt != "md":
        raise ValueError(f"unknown table format {fmt!r}; one of {', '.join(FORMATS)}")
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in COLUMNS)
                     + " |")
    return "\n".join(lines) + "\n"
