"""Structured pruning (fairseq_ext.compression.structured): heads and FFN neurons ranked by norm are really
removed (smaller matrices, fewer heads), the kept ones compute what they computed, and pruned fairseq models
still run (forward, incremental generation, int8 on top)."""
import copy

import pytest
import torch
from fairseq.modules import MultiheadAttention
from fairseq.sequence_generator import SequenceGenerator
from torch import nn

from fairseq_ext.compression.int8 import count_calls, quantize_linears_int8
from fairseq_ext.compression.structured import (
    check_fraction,
    head_norms,
    kept_count,
    neuron_norms,
    prune_attention_heads,
    prune_ffn_neurons,
    structured_prune,
)
from test_int8 import sample, tiny_transformer


def zero_heads(attn, heads):
    d = attn.head_dim
    with torch.no_grad():
        for h in heads:
            rows = slice(h * d, (h + 1) * d)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                proj.weight[rows] = 0
                proj.bias[rows] = 0
            attn.out_proj.weight[:, rows] = 0


def zero_neurons(layer, neurons):
    with torch.no_grad():
        layer.fc1.weight[neurons] = 0
        layer.fc1.bias[neurons] = 0
        layer.fc2.weight[:, neurons] = 0


def test_fraction_and_counts():
    assert check_fraction("0.25") == 0.25 and check_fraction(0) == 0.0
    for bad in (1.0, -0.1, "half", None, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            check_fraction(bad)
    assert [kept_count(16, f) for f in (0, 0.25, 0.5, 0.9, 0.99)] == [16, 12, 8, 2, 1]
    assert kept_count(4096, 0.5) == 2048 and kept_count(1, 0.5) == 1
    assert kept_count(2, 0.25) == 2 and kept_count(6, 0.25) == 5  # 0.5 and 1.5 heads: halves round down


def test_zero_norm_heads_pruned_attention_unchanged_and_smaller():
    torch.manual_seed(0)
    attn = MultiheadAttention(64, 4, self_attention=True).eval()
    zero_heads(attn, [1, 3])
    assert head_norms(attn)[[1, 3]].tolist() == [0, 0] and (head_norms(attn)[[0, 2]] > 0).all()
    x = torch.randn(6, 2, 64)
    with torch.no_grad():
        reference = attn(x, x, x)[0]  # fairseq's fast path (F.multi_head_attention_forward)
    report = prune_attention_heads(nn.ModuleDict({"attn": attn}), 0.5)
    assert report == {"attn": (4, 2)}
    assert attn.num_heads == 2 and attn.embed_dim == 32
    assert attn.q_proj.weight.shape == (32, 64) and attn.k_proj.weight.shape == (32, 64)
    assert attn.v_proj.bias.shape == (32,) and attn.out_proj.weight.shape == (64, 32)
    with torch.no_grad():
        out = attn(x, x, x)[0]
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)


def test_zero_norm_neurons_pruned_ffn_unchanged_and_smaller():
    model = tiny_transformer()
    layer = model.encoder.layers[0]
    zero_neurons(layer, list(range(0, 128, 2)))
    assert (neuron_norms(layer)[::2] == 0).all()
    x = torch.randn(5, 3, 64)
    with torch.no_grad():
        reference = layer.fc2(layer.activation_fn(layer.fc1(x)))
    prune_ffn_neurons(layer, 0.5)
    assert layer.fc1.weight.shape == (64, 64) and layer.fc2.weight.shape == (64, 64)
    with torch.no_grad():
        out = layer.fc2(layer.activation_fn(layer.fc1(x)))
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)


def test_fairseq_model_with_zero_norm_units_pruned_is_unchanged():
    """Whole model: the pruned-away heads (all attention kinds) and neurons had zero norm -> same outputs."""
    model = tiny_transformer()
    for layer in list(model.encoder.layers) + list(model.decoder.layers):
        zero_neurons(layer, list(range(96)))  # 3/4 of the 128 neurons
        zero_heads(layer.self_attn, [0, 2])
        if hasattr(layer, "encoder_attn"):
            zero_heads(layer.encoder_attn, [1, 2])
    src, lengths, prev = sample(model)
    with torch.no_grad():
        reference = model(src, lengths, prev)[0]
    report = structured_prune(model, heads=0.5, ffn=0.75)
    assert set(report["heads"].values()) == {(4, 2)} and len(report["heads"]) == 2 + 2 * 2
    assert set(report["ffn"].values()) == {(128, 32)} and len(report["ffn"]) == 4
    assert model.decoder.layers[1].encoder_attn.q_proj.weight.shape == (32, 64)
    assert model.decoder.layers[1].fc1.weight.shape == (32, 64)
    with torch.no_grad():
        out = model(src, lengths, prev)[0]
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_pruned_fairseq_model_generates_and_composes_with_int8():
    model = tiny_transformer()
    params_before = sum(p.numel() for p in model.parameters())
    structured_prune(model, heads=0.5, ffn=0.5)
    assert sum(p.numel() for p in model.parameters()) < params_before
    src, lengths, prev = sample(model)
    dictionary = model.decoder.dictionary
    net_input = {"net_input": {"src_tokens": src, "src_lengths": lengths}}
    generator = SequenceGenerator([model], dictionary, beam_size=2, max_len_a=0, max_len_b=6, min_len=6)
    with torch.no_grad():
        fp32_logits = model(src, lengths, prev)[0]
        hypos = generator.generate([model], net_input)  # incremental decoding with the smaller caches
    assert all(len(h[0]["tokens"]) == 7 for h in hypos)
    int8 = copy.deepcopy(model)
    quantize_linears_int8(int8)
    with torch.no_grad(), count_calls(int8) as calls:
        int8_logits = int8(src, lengths, prev)[0]
        SequenceGenerator([int8], dictionary, beam_size=2, max_len_a=0, max_len_b=6, min_len=6).generate([int8], net_input)
    assert calls["encoder.layers.0.self_attn.q_proj"] == 2 and calls["decoder.layers.0.fc1"] > 2
    assert float((int8_logits - fp32_logits).abs().max() / fp32_logits.abs().max()) < 0.05


def test_int8_model_cannot_be_pruned_afterwards():
    model = tiny_transformer()
    quantize_linears_int8(model)
    with pytest.raises(TypeError, match="prune before int8"):
        structured_prune(model, heads=0.5)
    with pytest.raises(TypeError, match="prune before int8"):
        structured_prune(model, ffn=0.5)
