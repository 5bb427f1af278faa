"""Uniform k-bit quantization: error bound, levels, exact zeros, idempotence, STE and QAT."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fairseq_ext.compression import (
    CompressionSpec, QuantizationAwareTraining, dequantize, fake_quantize, fake_quantize_, quantizable_weights, quantize,
)
from fairseq_ext.compression.plan import compress_tensor_


def bits_of(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)


quantization_cases = st.tuples(
    st.integers(1, 6), st.integers(1, 9), st.sampled_from(range(2, 9)), st.sampled_from(["symmetric", "asymmetric"]),
    st.sampled_from([("channel", 0), ("tensor", 0), ("group", 1), ("group", 2), ("group", 3)]),
    st.integers(0, 2**31 - 1), st.floats(1e-3, 1e3), st.booleans(),
)


def case_layout(rows, cols, granularity, group_size):
    """(cols widened to a multiple of group_size, number of quantization groups)."""
    if granularity == "group":
        cols = -(-cols // group_size) * group_size
        return cols, rows * cols // group_size
    return cols, rows if granularity == "channel" else 1


def random_weight(rows, cols, seed, magnitude, with_zeros):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=generator) * magnitude + torch.rand(rows, 1, generator=generator) * magnitude
    if with_zeros:  # some pruned entries, and a row that is all zero
        weight[torch.rand(rows, cols, generator=generator) < 0.4] = 0.0
        weight[0] = 0.0
    return weight


@settings(max_examples=80, deadline=None)
@given(quantization_cases)
def test_quantization_properties(case):
    rows, cols, bits, scheme, (granularity, group_size), seed, magnitude, with_zeros = case
    cols, groups = case_layout(rows, cols, granularity, group_size)
    weight = random_weight(rows, cols, seed, magnitude, with_zeros)
    quantized = quantize(weight, bits, scheme, granularity, group_size)
    values = dequantize(quantized)
    assert quantized.scale.shape == (groups,) and quantized.group_size == group_size
    scale = quantized.scale.repeat_interleave(weight.numel() // groups).view_as(weight)

    # Nothing is clipped: every value is within half a step of its grid point.
    assert torch.all((weight - values).abs() <= scale / 2 * (1 + 1e-6))
    # At most 2**k levels per group; codes fit in k bits.
    assert int(quantized.codes.max()) < 2**bits
    for group in values.reshape(groups, -1):
        assert group.unique().numel() <= 2**bits
    # Zero is a grid point: zeros (pruned weights) come back as exactly +0.0.
    zeros = weight == 0
    assert torch.equal(bits_of(values[zeros]), torch.zeros(int(zeros.sum()), dtype=torch.int32))
    assert torch.equal(quantized.codes[zeros].int(), quantized.zero_point.repeat_interleave(weight.numel() // groups).view_as(weight)[zeros])
    # fake_quantize is dequantize(quantize()), and the in-place numpy path agrees bit for bit.
    assert torch.equal(bits_of(fake_quantize(weight, bits, scheme, granularity, group_size)), bits_of(values))
    in_place = weight.clone()
    scale_used, zero_point_used = fake_quantize_(in_place, bits, scheme, granularity, group_size)
    assert torch.equal(bits_of(in_place), bits_of(values))
    assert torch.equal(scale_used, quantized.scale) and torch.equal(zero_point_used, quantized.zero_point)
    # Idempotent: re-quantizing the quantized values finds the same grid (scale; the zero point may
    # shift along it when two fit equally well) and reproduces every value bit for bit.
    again = quantize(values, bits, scheme, granularity, group_size)
    assert torch.equal(again.scale, quantized.scale)
    offsets = (again.codes.int() - quantized.codes.int()).reshape(groups, -1)
    assert torch.equal(offsets, (again.zero_point - quantized.zero_point)[:, None].expand_as(offsets))
    assert torch.equal(bits_of(dequantize(again)), bits_of(values))
    assert torch.equal(bits_of(fake_quantize(values, bits, scheme, granularity, group_size)), bits_of(values))


@settings(max_examples=40, deadline=None)
@given(quantization_cases)
def test_kept_entries_path_equals_masking_then_quantizing_densely(case):
    rows, cols, bits, scheme, (granularity, group_size), seed, magnitude, _ = case
    cols, _ = case_layout(rows, cols, granularity, group_size)
    weight = random_weight(rows, cols, seed, magnitude, with_zeros=False)
    mask = torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed + 1)) < 0.5
    spec = CompressionSpec(bits=bits, scheme=scheme, granularity=granularity, group_size=group_size)
    through_entries = weight.clone()
    result = compress_tensor_(through_entries, mask, spec)  # contiguous float32: the kept-entries path
    dense = weight.t().clone().t()  # not contiguous: the torch path
    compress_tensor_(dense, mask, spec)
    assert torch.equal(bits_of(through_entries.contiguous()), bits_of(dense.contiguous()))
    assert result.stored.tolist() == torch.flatten(through_entries != 0).nonzero().view(-1).tolist()
    dense_scale = quantize(weight.masked_fill(~mask, 0), bits, scheme, granularity, group_size).scale
    assert torch.equal(result.scale, dense_scale)


def test_known_grids():
    two_bit = quantize(torch.tensor([[-1.0, 0.5, 0.25]]), 2, "symmetric", "tensor")
    assert two_bit.scale.tolist() == [1.0] and two_bit.zero_point.tolist() == [2]
    assert dequantize(two_bit).tolist() == [[-1.0, 0.0, 0.0]]  # 0.5 rounds half to even
    asymmetric = quantize(torch.tensor([[-1.0, 2.0, 0.9]]), 2, "asymmetric", "tensor")
    assert asymmetric.scale.tolist() == [1.0] and asymmetric.zero_point.tolist() == [1]
    assert asymmetric.codes.tolist() == [[0, 3, 2]]
    channel = quantize(torch.tensor([[7.0, -3.5], [0.0, 0.0]]), 4, "symmetric", "channel")
    assert channel.scale.tolist() == [1.0, 1.0]  # an all-zero row gets a harmless scale
    assert dequantize(channel).tolist() == [[7.0, -4.0], [0.0, 0.0]]


def test_group_granularity_by_hand():
    # 4-bit, groups of 4 columns: each row has two groups, each with its own scale (and zero point).
    weight = torch.tensor([[0.5, -1.0, 0.25, 1.75, 0.0, 0.0, 0.0, 0.0],
                           [3.5, 1.5, -0.75, 0.0, -7.0, 1.0, 2.0, 3.3]])
    symmetric = quantize(weight, 4, "symmetric", "group", 4)
    # Steps are max|w| / 7: 1.75 / 7, an all-zero group's harmless 1, 3.5 / 7 and 7 / 7; codes w / step + 8.
    assert symmetric.scale.tolist() == [0.25, 1.0, 0.5, 1.0] and symmetric.zero_point.tolist() == [8, 8, 8, 8]
    assert symmetric.codes.tolist() == [[10, 4, 9, 15, 8, 8, 8, 8], [15, 11, 6, 8, 1, 9, 10, 11]]
    assert dequantize(symmetric).tolist() == [[0.5, -1.0, 0.25, 1.75, 0.0, 0.0, 0.0, 0.0],
                                              [3.5, 1.5, -1.0, 0.0, -7.0, 1.0, 2.0, 3.0]]  # -1.5 rounds to even
    # One scale per row instead: the second row shares 7's step of 1 and loses 3.5 and 1.5.
    assert dequantize(quantize(weight, 4, "symmetric", "channel"))[1].tolist() == [4.0, 2.0, -1.0, 0.0, -7.0, 1.0,
                                                                                   2.0, 3.0]

    weight = torch.tensor([[2.75, -1.0, 0.5, 0.3, 0.0, 1.0, 2.0, 3.5],
                           [0.0, 0.0, 0.0, 0.0, -1.75, 0.125, 0.0, 0.0]])
    asymmetric = quantize(weight, 4, "asymmetric", "group", 4)
    # [-1, 2.75] is 4 steps of 0.25 below zero and 11 above; [0, 3.5] is 14 above one below (the zero
    # point stays >= 1); an all-zero group gets step 1, zero point 1; [-1.75, 0.125] is 14 steps of 0.125 and 1.
    assert asymmetric.scale.tolist() == [0.25, 0.25, 1.0, 0.125] and asymmetric.zero_point.tolist() == [4, 1, 1, 14]
    assert asymmetric.codes.tolist() == [[15, 0, 6, 5, 1, 5, 9, 15], [1, 1, 1, 1, 0, 15, 14, 14]]
    assert dequantize(asymmetric).tolist() == [[2.75, -1.0, 0.5, 0.25, 0.0, 1.0, 2.0, 3.5],
                                               [0.0, 0.0, 0.0, 0.0, -1.75, 0.125, 0.0, 0.0]]
    assert torch.equal(fake_quantize(weight, 4, "asymmetric", "group", 4), dequantize(asymmetric))


def test_group_options_are_checked_with_the_weight_width():
    with pytest.raises(ValueError, match="weight is 6 wide, not a multiple of group_size 4"):
        quantize(torch.ones(2, 6), 4, "symmetric", "group", 4)
    with pytest.raises(ValueError) as error:
        fake_quantize_(torch.ones(2, 6), 16, "symmetric", "group")
    assert "bits=16: allowed values are 2, 3, 4, 5, 6, 7, 8" in str(error.value)
    assert "granularity 'group' needs group_size >= 1, an integer (got 0)" in str(error.value)
    with pytest.raises(ValueError, match="group_size 4 applies only to granularity 'group'"):
        fake_quantize(torch.ones(2, 8), 4, "symmetric", "channel", 4)


def test_fake_quantize_passes_gradients_straight_through():
    weight = torch.randn(3, 5, requires_grad=True)
    upstream = torch.arange(15.0).view(3, 5)
    (fake_quantize(weight, 3, "asymmetric", "channel") * upstream).sum().backward()
    assert torch.equal(weight.grad, upstream)
    assert fake_quantize(weight, 32, "symmetric", "channel") is weight
    grouped = torch.randn(3, 4, requires_grad=True)
    (fake_quantize(grouped, 3, "symmetric", "group", 2) * upstream[:, :4]).sum().backward()
    assert torch.equal(grouped.grad, upstream[:, :4])


def test_bad_options_list_every_problem():
    with pytest.raises(ValueError) as error:
        quantize(torch.ones(2, 2), 16, "affine", "row")
    message = str(error.value)
    assert "bits=16: allowed values are 2, 3, 4, 5, 6, 7, 8" in message
    assert "scheme='affine'" in message and "granularity='row'" in message
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantize(torch.tensor([[1.0, float("nan")]]), 4, "symmetric", "channel")


class FastPathAttention(nn.Module):
    """Reads its child's weight directly, as fairseq's MultiheadAttention fast path does."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.q_proj = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        x = self.embed(tokens)
        return F.linear(F.linear(x, self.q_proj.weight, self.q_proj.bias), self.head.weight)


def test_quantizable_weights_include_the_tied_embedding_once():
    model = FastPathAttention()
    assert list(quantizable_weights(model)) == ["embed.weight", "q_proj.weight"]
    assert list(quantizable_weights(model, include_embeddings=False)) == ["q_proj.weight"]


def test_quantization_aware_training_swaps_values_in_and_latent_weights_back():
    torch.manual_seed(0)
    model = FastPathAttention()
    weights = quantizable_weights(model)
    mask = torch.rand(4, 4) > 0.5
    latent = {name: w.detach().clone() for name, w in weights.items()}
    keys = list(model.state_dict())
    tokens = torch.tensor([[1, 2, 3]])
    with QuantizationAwareTraining(weights, 3, "symmetric", "channel", masks={"q_proj.weight": mask}):
        expected_q = fake_quantize(latent["q_proj.weight"].masked_fill(~mask, 0), 3, "symmetric", "channel")
        assert torch.equal(model.q_proj.weight, expected_q)
        assert torch.equal(model.head.weight, fake_quantize(latent["embed.weight"], 3, "symmetric", "channel"))
        model(tokens).sum().backward()
        grads = {name: w.grad.clone() for name, w in weights.items()}
    assert list(model.state_dict()) == keys
    for name, weight in weights.items():
        assert torch.equal(weight, latent[name])
    # The gradients are those of the quantized model.
    reference = FastPathAttention()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference.q_proj.weight.copy_(expected_q)
        reference.embed.weight.copy_(fake_quantize(latent["embed.weight"], 3, "symmetric", "channel"))
    reference(tokens).sum().backward()
    assert torch.allclose(grads["q_proj.weight"], reference.q_proj.weight.grad)
    assert torch.allclose(grads["embed.weight"], reference.embed.weight.grad)
    with pytest.raises(ValueError, match="mask 'nope' matches no weight"):
        QuantizationAwareTraining(weights, 4, "symmetric", "channel", masks={"nope": mask})


def test_quantization_aware_training_with_groups():
    torch.manual_seed(0)
    model = FastPathAttention()
    weights = quantizable_weights(model)
    latent = {name: w.detach().clone() for name, w in weights.items()}
    with QuantizationAwareTraining(weights, 3, "asymmetric", "group", group_size=2):
        for name, weight in weights.items():
            assert torch.equal(weight, fake_quantize(latent[name], 3, "asymmetric", "group", 2))
            assert torch.equal(weight, dequantize(quantize(latent[name], 3, "asymmetric", "group", 2)))
    assert all(torch.equal(w, latent[name]) for name, w in weights.items())
    with pytest.raises(ValueError) as error:  # both weights are 4 wide
        QuantizationAwareTraining(weights, 3, "asymmetric", "group", group_size=3)
    assert "embed.weight is 4 wide, not a multiple of group_size 3" in str(error.value)
    assert "q_proj.weight is 4 wide, not a multiple of group_size 3" in str(error.value)
