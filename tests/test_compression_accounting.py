"""Byte accounting: hand-computed sizes, the cheapest sparse index, tied tensors counted once."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fairseq_ext.compression import CompressionSpec, account, compress
from fairseq_ext.compression import bitpack, sparse_index


class TiedModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(11, 6)
        self.fc1 = nn.Linear(6, 8)
        self.layer_norm = nn.LayerNorm(8)
        self.output_projection = nn.Linear(8, 11, bias=False)
        self.output_projection.weight = nn.Parameter(torch.randn(11, 8))
        self.tied_projection = nn.Linear(6, 11, bias=False)
        self.tied_projection.weight = self.embed_tokens.weight


def brute_force_delta_entries(positions, numel, bits):
    """Walk the tensor: a filler each time a run of zeros reaches 2**bits."""
    entries, run = 0, 0
    stored = set(positions.tolist())
    for position in range(numel):
        if position in stored:
            entries, run = entries + 1, 0
        else:
            run += 1
            if run == 2**bits:
                entries, run = entries + 1, 0
    return entries


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(0, 2**31 - 1), st.floats(0, 1), st.integers(1, 8))
def test_delta_index_round_trips_and_its_size_matches_a_brute_force_count(numel, seed, density, bits):
    rng = np.random.default_rng(seed)
    positions = np.flatnonzero(rng.random(numel) < density)
    fillers = sparse_index.filler_counts(sparse_index.zero_runs(positions, numel))
    assert positions.size + fillers[bits - 1] == brute_force_delta_entries(positions, numel, bits)
    skips = sparse_index.delta_encode(positions, numel, bits)
    assert skips.size == positions.size + fillers[bits - 1]
    decoded = sparse_index.delta_decode(bitpack.unpack(bitpack.pack(skips, bits), bits, skips.size), numel, bits)
    assert set(positions.tolist()) <= set(decoded.tolist())
    assert len(set(decoded.tolist()) - set(positions.tolist())) == fillers[bits - 1]  # fillers only add zeros
    assert sparse_index.bitmap_decode(sparse_index.bitmap_encode(positions, numel), numel).tolist() == positions.tolist()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 16), st.integers(0, 70), st.integers(0, 2**31 - 1))
def test_bit_packing_round_trips_in_the_stated_size(bits, count, seed):
    values = np.random.default_rng(seed).integers(0, 2**bits, count)
    packed = bitpack.pack(values, bits)
    assert len(packed) == math.ceil(count * bits / 8)
    assert bitpack.unpack(packed, bits, count).tolist() == values.tolist()


def test_bit_order_is_least_significant_first():
    assert bitpack.pack(np.array([1, 2, 3]), 2) == bytes([0b00111001])
    assert bitpack.pack(np.array([5, 1]), 3) == bytes([0b00001101])
    with pytest.raises(ValueError, match="do not fit in 3 bits"):
        bitpack.pack(np.array([8]), 3)


def test_hand_computed_bytes_of_a_delta_indexed_tensor():
    layer = nn.Linear(64, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.01)
        layer.weight[0, 10], layer.weight[0, 40] = 1.0, -0.5
    spec = CompressionSpec(sparsity=62 / 64, bits=8, granularity="tensor")
    (measured,) = account(layer, spec).tensors
    # Runs of zeros: 10, 29, then 23 trailing. 5-bit fields need no filler: 2 entries of 5 + 8 bits
    # (2 + 2 bytes); b = 6 costs the same and loses the tie; a bitmap costs 8 + 2 bytes, dense 64.
    assert (measured.index_kind, measured.delta_bits, measured.entries) == ("delta", 5, 2)
    assert (measured.value_bytes, measured.index_bytes, measured.scale_bytes, measured.total_bytes) == (2, 2, 4, 8)
    assert (measured.nonzero, measured.numel, measured.bits) == (2, 64, 8)


def test_hand_computed_bytes_of_a_bitmap_and_of_untouched_tensors():
    layer = nn.Linear(8, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(16.0).view(2, 8) + 1)
    report = account(layer, CompressionSpec(sparsity=0.5, bits=3, scheme="asymmetric"))
    weight, bias = report.tensors
    # 8 of 16 kept: bitmap 2 bytes + 8 values * 3 bits = 3 bytes beats dense (6) and delta (>= 4).
    assert (weight.index_kind, weight.value_bytes, weight.index_bytes) == ("bitmap", 3, 2)
    assert weight.scale_bytes == 2 * (4 + 1)  # a float32 scale and a uint8 zero point per row
    assert (bias.index_kind, bias.bits, bias.total_bytes, bias.quantized) == ("dense", 32, 8, False)
    assert report.total_bytes == 3 + 2 + 10 + 8
    assert report.fp32_bytes == 4 * 18 and report.ratio == pytest.approx(72 / 23)
    assert report.sparsity == 0.5 and report.bits == 3


@pytest.mark.parametrize("scheme, scale_bytes", [("symmetric", 4 * 4), ("asymmetric", 4 * (4 + 1))])
def test_hand_computed_bytes_of_group_granularity(scheme, scale_bytes):
    layer = nn.Linear(8, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(16.0).view(2, 8) + 1)
    spec = CompressionSpec(bits=3, scheme=scheme, granularity="group", group_size=4)
    weight, bias = account(layer, spec).tensors
    # 2 rows of 8 in groups of 4: 4 groups, each a float32 scale (and a uint8 zero point); 16 3-bit codes: 6 bytes.
    assert (weight.groups, weight.scale_bytes, weight.value_bytes, weight.total_bytes) == (4, scale_bytes, 6,
                                                                                          6 + scale_bytes)
    assert (bias.groups, bias.total_bytes) == (0, 8)
    pruned = account(layer, dataclasses.replace(spec, sparsity=0.5)).tensors[0]
    # 8 kept: bitmap 2 bytes + 8 codes of 3 bits, 3 bytes; the scales are per group whatever is pruned.
    assert (pruned.index_kind, pruned.value_bytes, pruned.index_bytes, pruned.scale_bytes) == ("bitmap", 3, 2,
                                                                                              scale_bytes)


def test_a_width_that_groups_do_not_tile_is_named():
    with pytest.raises(ValueError) as error:  # embedding and fc1 are 6 wide; the output projection (8) is fine
        account(TiedModel(), CompressionSpec(bits=4, granularity="group", group_size=4))
    message = str(error.value)
    assert "2 problems" in message
    assert "embed_tokens.weight is 6 wide, not a multiple of group_size 4" in message
    assert "fc1.weight is 6 wide, not a multiple of group_size 4" in message
    report = account(TiedModel(), CompressionSpec(bits=4, granularity="group", group_size=2))
    assert {t.name: t.groups for t in report.tensors if t.quantized} == {
        "embed_tokens.weight": 33, "fc1.weight": 24, "output_projection.weight": 44}


def test_compress_uses_given_masks_as_they_are():
    torch.manual_seed(0)
    model = TiedModel()
    # Keep the smallest magnitudes: the opposite of what magnitude pruning would keep.
    magnitudes = model.fc1.weight.detach().abs()
    keep = magnitudes <= magnitudes.flatten().kthvalue(12).values
    masks = {"fc1.weight": keep}
    expected = torch.where(keep, model.fc1.weight.detach(), torch.zeros(()))
    spec = CompressionSpec(sparsity=0.75, prune_method="wanda")
    predicted = account(model, spec, masks)
    report, returned = compress(model, spec, masks=masks)
    assert returned == masks and report == predicted
    assert torch.equal(model.fc1.weight, expected) and int((model.fc1.weight != 0).sum()) == 12
    assert model.output_projection.weight.count_nonzero() == 88  # no mask, no pruning
    assert report.sparsity == 36 / 48
    with pytest.raises(ValueError, match="prune_method 'wanda' with prune_pattern 'unstructured' needs its masks"):
        compress(model, spec)
    with pytest.raises(ValueError, match="prune_method 'magnitude' with prune_pattern '2:4' needs its masks given"):
        account(model, CompressionSpec(sparsity=0.5, prune_pattern="2:4"))


def test_tied_tensors_count_once_and_compress_reports_what_account_predicted():
    torch.manual_seed(0)
    model = TiedModel()
    spec = CompressionSpec(sparsity=0.6, bits=4)
    predicted = account(model, spec)
    names = [t.name for t in predicted.tensors]
    assert names == ["embed_tokens.weight", "fc1.weight", "fc1.bias", "layer_norm.weight", "layer_norm.bias",
                     "output_projection.weight"]
    assert predicted.aliases == {"tied_projection.weight": "embed_tokens.weight"}
    assert predicted.fp32_bytes == 4 * (66 + 48 + 8 + 16 + 88)
    embedding = predicted.tensors[0]
    assert embedding.quantized and embedding.index_kind == "dense" and embedding.nonzero <= 66
    report, masks = compress(model, spec)
    assert list(masks) == ["fc1.weight", "output_projection.weight"]
    assert report == predicted
    assert report.sparsity == pytest.approx(round(0.6 * 136) / 136)
    line = report.totals_line()
    assert line.startswith("sparsity 0.603 bits 4 compressed 0.00 MB (fp32 0.0 MB, ") and line.endswith("x)")
    table = report.table()
    assert "embed_tokens.weight" in table and "tied_projection" not in table and table.endswith(line)


def test_account_does_not_modify_the_model():
    model = TiedModel()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    account(model, CompressionSpec(sparsity=0.9, bits=2, prune_embeddings=True))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_account_accepts_half_precision_where_compress_refuses_it():
    torch.manual_seed(0)
    model = TiedModel().half()
    spec = CompressionSpec(sparsity=0.5, bits=4)
    report = account(model, spec)
    as_float = account(copy.deepcopy(model).float(), spec)
    for half_tensor, float_tensor in zip(report.tensors, as_float.tensors):
        assert half_tensor.quantized == float_tensor.quantized
        if half_tensor.quantized:  # the same codes, computed in float32 either way
            assert dataclasses.replace(half_tensor, dtype="float32") == float_tensor
        else:
            assert (half_tensor.bits, float_tensor.bits) == (16, 32)
    with pytest.raises(ValueError, match="embed_tokens.weight is float16: quantization needs float32"):
        compress(model, spec)


@pytest.mark.parametrize("bits", [3, 7, 12])
def test_bit_packing_across_steps(monkeypatch, bits):
    values = np.random.default_rng(bits).integers(0, 2**bits, 77)
    in_one_step = bitpack.pack(values, bits)
    monkeypatch.setattr(bitpack, "VALUES_PER_STEP", 8)
    assert bitpack.pack(values, bits) == in_one_step
    assert bitpack.unpack(in_one_step, bits, 77).tolist() == values.tolist()
