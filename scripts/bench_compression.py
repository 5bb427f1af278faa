"""Benchmark of fairseq_ext.compression on a transformer_vaswani_wmt_en_fr_big-shaped model.

Builds the shapes in plain torch (6+6 layers, d=1024, ffn 4096, 16 heads' worth of projections,
one joint embedding shared by encoder, decoder and output projection; random weights), then times
compress() with global 90% pruning + 4-bit per-channel quantization, measures its extra peak memory
(VmHWM after resetting it through /proc/self/clear_refs, minus the RSS before), writes the packed
file and checks it against the accounted size and, loaded back, against the model bit for bit.
Exits 1 when a target is missed:

    compress() <= 5 s, extra peak memory <= 1x the model, file <= 1.02x accounted, bit-exact load.

With the default 40k joint vocabulary these shapes hold 217M parameters (176M in the layers plus
41M in the shared embedding); --vocab 7600 gives the 184M of the task statement. Timings are wall
clock on whatever else the machine is running: the figures printed are the ones to compare.

    .venv/bin/python scripts/bench_compression.py [--vocab 40000] [--out /tmp/bench.fxc]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

from fairseq_ext.compression import CompressionSpec, compress, load_compressed, save_compressed

TIME_LIMIT_S = 5.0
MEMORY_LIMIT_X_MODEL = 1.0
FILE_LIMIT_X_ACCOUNTED = 1.02


class Attention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))


class Layer(nn.Module):
    def __init__(self, dim: int, ffn: int, cross_attention: bool):
        super().__init__()
        self.self_attn = Attention(dim)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        if cross_attention:
            self.encoder_attn = Attention(dim)
            self.encoder_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)


class Stack(nn.Module):
    def __init__(self, embedding: nn.Embedding, layers: int, dim: int, ffn: int, cross_attention: bool):
        super().__init__()
        self.embed_tokens = embedding
        self.layers = nn.ModuleList(Layer(dim, ffn, cross_attention) for _ in range(layers))


class VaswaniBig(nn.Module):
    """Parameter names and ties as fairseq's TransformerModel with --share-all-embeddings."""

    def __init__(self, vocab: int, dim: int = 1024, ffn: int = 4096, layers: int = 6):
        super().__init__()
        embedding = nn.Embedding(vocab, dim, padding_idx=1)
        self.encoder = Stack(embedding, layers, dim, ffn, cross_attention=False)
        self.decoder = Stack(embedding, layers, dim, ffn, cross_attention=True)
        self.decoder.output_projection = nn.Linear(dim, vocab, bias=False)
        self.decoder.output_projection.weight = embedding.weight


def build_model(vocab: int) -> nn.Module:
    with torch.device("meta"):
        model = VaswaniBig(vocab)
    model = model.to_empty(device="cpu")
    model.decoder.output_projection.weight = model.encoder.embed_tokens.weight  # to_empty unties
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for parameter in model.parameters():
            rng.standard_normal(out=parameter.view(-1).numpy(), dtype=np.float32)
            parameter.mul_(parameter.shape[-1] ** -0.5)
    return model


def proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=40000)
    parser.add_argument("--out", default=None, help="packed file to write (default: a temporary folder)")
    args = parser.parse_args()

    model = build_model(args.vocab)
    unique = {id(p): p for p in model.parameters()}.values()
    parameters = sum(p.numel() for p in unique)
    model_mb = sum(p.numel() * p.element_size() for p in unique) / 1e6
    spec = CompressionSpec(sparsity=0.9, scope="global", bits=4, scheme="symmetric", granularity="channel")
    print(f"model: {parameters / 1e6:.1f}M parameters, {model_mb:.0f} MB fp32, torch threads {torch.get_num_threads()}")

    gc.collect()
    reset_peak_rss()
    rss_before_kb = proc_status_kb("VmRSS")
    start = time.perf_counter()
    report, masks = compress(model, spec)
    seconds = time.perf_counter() - start
    extra_mb = (proc_status_kb("VmHWM") - rss_before_kb) * 1024 / 1e6
    print(report.totals_line())

    with tempfile.TemporaryDirectory() as folder:
        path = args.out or os.path.join(folder, "vaswani_big.fxc")
        gc.collect()
        reset_peak_rss()
        rss_before_kb = proc_status_kb("VmRSS")
        start = time.perf_counter()
        save_compressed(path, model, spec, masks, metadata={"arch": "transformer_vaswani_wmt_en_fr_big"})
        save_seconds = time.perf_counter() - start
        save_extra_mb = (proc_status_kb("VmHWM") - rss_before_kb) * 1024 / 1e6
        file_mb = os.path.getsize(path) / 1e6
        start = time.perf_counter()
        state, _, _ = load_compressed(path)
        load_seconds = time.perf_counter() - start
    reference = model.state_dict()
    bit_exact = sorted(state) == sorted(reference) and all(
        torch.equal(state[key].view(torch.int32), reference[key].view(torch.int32)) for key in reference
    )

    accounted_mb = report.total_bytes / 1e6
    checks = [
        (f"compress {seconds:.2f} s", seconds <= TIME_LIMIT_S, f"<= {TIME_LIMIT_S} s"),
        (
            f"extra peak memory {extra_mb:.0f} MB vs model {model_mb:.0f} MB ({extra_mb / model_mb:.2f}x)",
            extra_mb <= MEMORY_LIMIT_X_MODEL * model_mb, f"<= {MEMORY_LIMIT_X_MODEL}x",
        ),
        (
            f"file {file_mb:.3f} MB vs accounted {accounted_mb:.3f} MB ({file_mb / accounted_mb:.4f}x)",
            file_mb <= FILE_LIMIT_X_ACCOUNTED * accounted_mb, f"<= {FILE_LIMIT_X_ACCOUNTED}x",
        ),
        ("load is bit-exact", bit_exact, "every tensor equal"),
    ]
    print(
        f"ratio to fp32: {report.ratio:.1f}x   save {save_seconds:.2f} s (extra peak {save_extra_mb:.0f} MB)   "
        f"load {load_seconds:.2f} s"
    )
    for figure, ok, target in checks:
        print(f"{'ok  ' if ok else 'MISS'} {figure}   (target {target})")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
