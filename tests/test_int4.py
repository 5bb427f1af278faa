"""Real int4 inference (fairseq_ext.compression.int4, int4_state, meta_build): torch's CPU int4 kernels run the
quantizer's own codes, within bf16 rounding of the simulated model; tied tables are stored once; a packed file builds
the model straight into int4 modules, with exactly the .pt path's outputs; what cannot run is refused, by name."""
import copy

import pytest
import torch
from torch import nn

from fairseq_ext.compression import CompressionSpec, compress, dequantize, load_compressed, quantize, save_compressed
from fairseq_ext.compression.int4 import (
    Int4Embedding,
    Int4Linear,
    int4_embedding_from_quantized,
    int4_kernel_problem,
    int4_linear_from_quantized,
    packed_row_layout,
    quantize_model_int4,
)
from fairseq_ext.compression.int4_state import load_int4_state
from fairseq_ext.compression.meta_build import weights_on_meta
from fairseq_ext.compression.quantization import quantizable_weights
from fairseq_ext.compression.runtime import runtime_bytes
from tiny_models import sample, tiny_transformer

pytestmark = pytest.mark.skipif(int4_kernel_problem() is not None, reason=str(int4_kernel_problem()))
SPEC = CompressionSpec(bits=4, scheme="asymmetric", granularity="group", group_size=32)


def entry_scales(quantized):
    """The scale of every entry of a quantized weight, in its shape."""
    return quantized.scale.repeat_interleave(quantized.codes.numel() // quantized.scale.numel()).reshape(
        quantized.shape)


@pytest.mark.parametrize("bits, scheme, granularity, group_size, kernel_group", [
    (4, "asymmetric", "group", 32, 32),
    (4, "symmetric", "group", 128, 128),
    (4, "symmetric", "channel", 0, 256),  # one scale per row of 512 columns: kernel groups of 256 repeat it
    (3, "asymmetric", "group", 64, 64),
    (2, "symmetric", "tensor", 0, 256),
])
def test_the_kernel_runs_the_quantizers_codes_within_bf16_rounding(bits, scheme, granularity, group_size,
                                                                     kernel_group):
    torch.manual_seed(0)
    weight, bias, x = torch.randn(40, 512), torch.randn(40), torch.randn(3, 5, 512)
    quantized = quantize(weight, bits, scheme, granularity, group_size)
    simulated = dequantize(quantized)
    linear = int4_linear_from_quantized(quantized, bias)
    assert linear.group_size == kernel_group and linear.packed_weight.dtype == torch.uint8
    assert linear.packed_weight.numel() == 48 * 512 // 2  # two codes a byte, rows padded to a multiple of 16
    # The kernel's weight: the same codes; its scales and zeros in bf16 (8 significant bits), so each entry is off
    # by at most 2**-8 of its magnitude plus, for the asymmetric 4-bit grid's zero term, of 8 steps.
    error = (linear.dequantized() - simulated).abs()
    assert (error <= 2**-8 * (simulated.abs() + 8 * entry_scales(quantized))).all()
    with torch.no_grad():
        out, reference = linear(x), x @ simulated.T + bias
    assert out.shape == (3, 5, 40) and out.dtype == torch.float32
    assert float((out - reference).norm() / reference.norm()) < 1e-2  # bf16 activations and output
    assert float((out - reference).norm() / reference.norm()) > 0  # the kernel ran, not the float weights


def test_an_embedding_reads_its_rows_from_the_projections_packed_codes():
    torch.manual_seed(0)
    quantized = quantize(torch.randn(1000, 64), 4, "asymmetric", "group", 32)
    linear = int4_linear_from_quantized(quantized)
    embedding = int4_embedding_from_quantized(quantized, padding_idx=1, source=linear)
    assert embedding.source is linear  # the layout of this CPU's packing was found and checked
    tokens = torch.tensor([[0, 999, 3], [1, 1, 512]])
    assert torch.equal(embedding(tokens), linear.dequantized()[tokens])
    assert runtime_bytes(nn.ModuleList([linear, embedding])) == runtime_bytes(linear)  # stored once


@pytest.mark.parametrize("rows", [16, 48, 96, 2000, 4016])
def test_the_packing_layout_is_found_for_any_row_count(rows):
    layout = packed_row_layout(rows)
    assert layout.readable and layout.chunkable
    quantized = quantize(torch.randn(rows, 64), 3, "symmetric", "group", 32)
    linear = int4_linear_from_quantized(quantized)
    picked = torch.tensor([0, rows // 2, rows - 1])
    assert torch.equal(Int4Embedding(rows, 64, None, source=linear)(picked), linear.dequantized()[picked])


def test_a_transformer_runs_on_int4_modules_close_to_its_simulated_grid():
    model = tiny_transformer()
    src, lengths, prev = sample(model)
    compress(model, SPEC)  # simulated: float32 weights on the grid
    with torch.no_grad():
        reference = model(src, lengths, prev)[0]
    int4 = copy.deepcopy(model)
    replaced = quantize_model_int4(int4, quantizable_weights(int4), 4, "asymmetric", "group", 32)
    assert replaced["embeddings"] == ["encoder.embed_tokens", "decoder.embed_tokens"]
    assert len(replaced["linears"]) == 2 * 6 + 2 * 10 + 1 and not any(type(m) is nn.Linear for m in int4.modules())
    assert int4.decoder.embed_tokens.source is int4.decoder.output_projection  # one table, tied
    with torch.no_grad():
        out = int4(src, lengths, prev)[0]
    assert float((out - reference).abs().max() / reference.abs().max()) < 0.02
    assert (out.argmax(-1) == reference.argmax(-1)).float().mean() > 0.95
    float_bytes = 4 * sum(w.numel() for w in quantizable_weights(model).values())
    # Half a byte a weight, bf16 scale and zero per 32 columns: 84% of the float32 bytes go; the rest (LayerNorms,
    # biases, the sinusoidal position tables) stays as it was.
    assert runtime_bytes(model) - runtime_bytes(int4) == pytest.approx(float_bytes * (1 - (0.5 + 4 / 32) / 4), rel=0.01)


def test_a_packed_file_builds_the_model_straight_into_int4_with_the_same_outputs(tmp_path):
    model = tiny_transformer()
    src, lengths, prev = sample(model)
    save_compressed(tmp_path / "m.fxc", model, SPEC)
    compress(model, SPEC)
    from_pt = copy.deepcopy(model)
    quantize_model_int4(from_pt, quantizable_weights(from_pt), 4, "asymmetric", "group", 32)
    state, _, _ = load_compressed(tmp_path / "m.fxc", keep_quantized_bits=4)
    with weights_on_meta():
        built = tiny_transformer(seed=1)
    assert built.encoder.layers[0].fc1.weight.is_meta and not built.encoder.layers[0].fc1.bias is None
    load_int4_state(built, state)
    built.load_state_dict(state)
    assert not any(p.is_meta for p in built.parameters())
    with torch.no_grad():
        assert torch.equal(built(src, lengths, prev)[0], from_pt(src, lengths, prev)[0])
    assert runtime_bytes(built) == runtime_bytes(from_pt)


def test_weights_the_kernels_cannot_hold_are_all_named_before_any_change():
    model = nn.Sequential(nn.Linear(40, 32), nn.Linear(32, 48), nn.Linear(48, 16))
    compress(model, CompressionSpec(bits=4, granularity="channel"))
    with pytest.raises(ValueError) as error:
        quantize_model_int4(model, quantizable_weights(model), 4, "symmetric", "channel")
    assert "0.weight: 40 columns, not a multiple of 32" in str(error.value)
    assert "2.weight: 48 columns" in str(error.value) and "1.weight" not in str(error.value)
    assert all(type(m) is nn.Linear for m in model)  # nothing replaced
    with pytest.raises(ValueError, match="float32 model"):
        quantize_model_int4(nn.Sequential(nn.Linear(32, 32)).half(), ["0.weight"], 4, "symmetric", "channel")


def test_no_int4_op_is_named(monkeypatch):
    monkeypatch.delattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu", raising=False)
    import fairseq_ext.compression.int4 as int4

    monkeypatch.setattr(int4, "_matmul_op", lambda: None)
    assert "has no CPU int4 kernel (torch.ops.aten._weight_int4pack_mm_for_cpu)" in int4.int4_kernel_problem()
    assert Int4Linear  # the module itself imports on any torch
