"""Real int8 inference (fairseq_ext.compression.int8): the Linears really become int8 kernels, every one of
them runs in fairseq's generation (including the encoder's attention, which fairseq would otherwise route
around them), and the outputs stay within quantization error of fp32."""
import copy

import pytest
import torch
from torch import nn

from fairseq_ext.compression.int8 import (
    ENGINE_CHOICES,
    Int8Embedding,
    Int8Linear,
    check_int8_supported,
    count_calls,
    int8_engine,
    int8_linears,
    quantize_embeddings_int8,
    quantize_linears_int8,
)
from fairseq_ext.compression.module_surgery import disable_attention_fast_path
from fairseq_ext.compression.runtime import runtime_bytes
from fairseq_ext.models.grid import build_for_vocab
from tiny_models import sample, tiny_transformer

def relative_error(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_mlp_linears_replaced_outputs_close_and_really_int8():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 32)).eval()
    x = torch.randn(10, 64)
    with torch.no_grad():
        reference = mlp(x)
    model = copy.deepcopy(mlp)
    replaced = quantize_linears_int8(model)
    assert replaced == ["0", "2"]
    assert all(isinstance(model[i], Int8Linear) for i in (0, 2))
    assert model[0].weight().dtype == torch.qint8  # int8 storage, one scale per output row
    assert model[0].weight().q_per_channel_scales().shape == (256,)
    with torch.no_grad():
        out = model(x)
    err = relative_error(out, reference)
    assert 0 < err < 0.03, err  # differs from fp32 (int8 arithmetic ran), within 8-bit error


@pytest.mark.parametrize("engine", [e for e in ENGINE_CHOICES if e == "auto" or int8_engine(e) == e])
def test_every_available_engine_is_close(engine):
    torch.manual_seed(0)
    lin = nn.Linear(128, 96).eval()
    x = torch.randn(4, 9, 128)  # 3-D input, as fairseq's (time, batch, channel)
    with torch.no_grad():
        reference = lin(x)
        model = nn.Sequential(copy.deepcopy(lin))
        quantize_linears_int8(model, engine=engine)
        err = relative_error(model(x), reference)
    assert 0 < err < 0.03, (engine, err)


def test_fairseq_fast_path_bypasses_projection_modules_and_switch_restores_them():
    """Why the int8 conversion must switch fairseq's MHA fast path off: with it, the encoder never calls q_proj."""
    model = tiny_transformer()
    src, lengths, prev = sample(model)
    with torch.no_grad(), count_calls(model, nn.Linear) as calls:
        reference = model.encoder(src, src_lengths=lengths)["encoder_out"][0]
    assert calls["encoder.layers.0.self_attn.q_proj"] == 0  # F.multi_head_attention_forward read the weights
    assert calls["encoder.layers.0.fc1"] == 1
    assert disable_attention_fast_path(model) == 2 + 2 * 2  # encoder self-attn; decoder self- and cross-attn
    with torch.no_grad(), count_calls(model, nn.Linear) as calls:
        out = model.encoder(src, src_lengths=lengths)["encoder_out"][0]
    assert calls["encoder.layers.0.self_attn.q_proj"] == 1
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_fairseq_transformer_int8_forward_close_to_fp32():
    model = tiny_transformer()
    src, lengths, prev = sample(model)
    with torch.no_grad():
        reference = model(src, lengths, prev)[0]
        int8 = copy.deepcopy(model)
        replaced = quantize_linears_int8(int8)
        out = int8(src, lengths, prev)[0]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert sorted(replaced) == sorted(linears) and "decoder.output_projection" in replaced
    assert not any(isinstance(m, nn.Linear) for m in int8.modules())
    # the tied embedding stays fp32 and is still shared by encoder and decoder
    assert int8.encoder.embed_tokens.weight.dtype == torch.float32
    assert int8.encoder.embed_tokens.weight is int8.decoder.embed_tokens.weight
    err = relative_error(out, reference)
    assert 0 < err < 0.05, err
    assert (out.argmax(-1) == reference.argmax(-1)).float().mean() > 0.9


def test_generation_calls_every_int8_module_encoder_included():
    from fairseq.sequence_generator import SequenceGenerator

    model = tiny_transformer()
    quantize_linears_int8(model)
    src, lengths, _ = sample(model)
    dictionary = model.decoder.dictionary
    generator = SequenceGenerator([model], dictionary, beam_size=2, max_len_a=0, max_len_b=6, min_len=6)
    with torch.no_grad(), count_calls(model) as calls:
        hypos = generator.generate([model], {"net_input": {"src_tokens": src, "src_lengths": lengths}})
    assert len(hypos) == 3 and all(len(h[0]["tokens"]) == 7 for h in hypos)  # 6 tokens + </s>
    assert set(calls) == set(int8_linears(model))  # every int8 module ran
    for layer in range(2):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            assert calls[f"encoder.layers.{layer}.self_attn.{proj}"] == 1  # the encoder's attention is int8
            assert calls[f"decoder.layers.{layer}.self_attn.{proj}"] == 7  # one call per decoding step
        assert calls[f"decoder.layers.{layer}.encoder_attn.k_proj"] == 1  # cached after the first step
    assert calls["decoder.output_projection"] == 7


def test_unsupported_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="CPU only"):
        check_int8_supported("cuda")
    with pytest.raises(ValueError, match="fp32"):
        check_int8_supported("cpu", torch.float16)
    with pytest.raises(ValueError, match="allowed: auto"):
        int8_engine("tpu")
    with pytest.raises(ValueError, match="fp32"):
        quantize_linears_int8(nn.Sequential(nn.Linear(4, 4)).half())


def test_runtime_bytes_count_the_weights_as_they_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4, bias=False))
    model[3].weight = nn.Parameter(torch.randn(4, 16))
    embedding, linear, norm, head = 10 * 8, 8 * 16 + 16, 2 * 16, 16 * 4
    assert runtime_bytes(model) == 4 * (embedding + linear + norm + head)
    quantize_linears_int8(model)
    # int8 codes, one fp32 scale per output row, fp32 bias; the embedding and the LayerNorm stay fp32.
    linears = (8 * 16 + 4 * 16 + 4 * 16) + (16 * 4 + 4 * 4)
    assert runtime_bytes(model) == 4 * (embedding + norm) + linears
    assert quantize_embeddings_int8(model) == ["0"]
    assert runtime_bytes(model) == (10 * 8 + 4 * 10) + 4 * norm + linears  # int8 rows, one fp32 scale per row


def test_int8_embedding_rows_are_int8_and_look_up_within_half_a_step():
    torch.manual_seed(0)
    embedding = nn.Embedding(50, 16, padding_idx=1)
    with torch.no_grad():
        embedding.weight[1].zero_()  # fairseq's padding row
    int8 = Int8Embedding(embedding)
    assert int8.weight_int8.dtype == torch.int8 and int8.scale.shape == (50,)
    assert int8.weight_int8.abs().amax(dim=1).eq(127).sum() == 49  # every non-zero row spans the grid
    tokens = torch.tensor([[3, 1, 49], [0, 7, 7]])
    with torch.no_grad():
        reference, out = embedding(tokens), int8(tokens)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert torch.equal(out[0, 1], torch.zeros(16))  # the padding row stays exactly zero
    step = int8.scale[tokens].unsqueeze(-1)
    assert ((out - reference).abs() <= step / 2 + 1e-7).all() and not torch.equal(out, reference)
    assert torch.equal(int8.dequantized()[tokens], out)


def test_transformer_embeddings_become_one_shared_int8_table_and_outputs_stay_close():
    model = tiny_transformer()
    src, lengths, prev = sample(model)
    with torch.no_grad():
        reference = model(src, lengths, prev)[0]
        int8 = copy.deepcopy(model)
        quantize_linears_int8(int8)
        linears_only = int8(src, lengths, prev)[0]
        before = runtime_bytes(int8)
        replaced = quantize_embeddings_int8(int8)
        out = int8(src, lengths, prev)[0]
    assert replaced == ["encoder.embed_tokens", "decoder.embed_tokens"]  # --share-all-embeddings: one table
    assert isinstance(int8.encoder.embed_tokens, Int8Embedding) and int8.encoder.embed_tokens is int8.decoder.embed_tokens
    vocab, dim = model.encoder.embed_tokens.weight.shape
    assert before - runtime_bytes(int8) == 4 * vocab * dim - (vocab * dim + 4 * vocab)
    assert relative_error(out, reference) < 0.05 and not torch.equal(out, linears_only)
    assert (out.argmax(-1) == reference.argmax(-1)).float().mean() > 0.9


def test_an_embedding_whose_weight_is_read_elsewhere_stays_float():
    """RoBERTa's LM head reads the embedding's Parameter itself: quantizing the table would save nothing."""
    class Head(nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.weight = weight

    embedding = nn.Embedding(10, 4)
    model = nn.ModuleDict({"embed_tokens": embedding, "lm_head": Head(embedding.weight)})
    assert quantize_embeddings_int8(model) == []
    assert model["embed_tokens"] is embedding
    assert quantize_embeddings_int8(nn.ModuleDict({"embed_tokens": nn.Embedding(10, 4)}), skip={"embed_tokens"}) == []


def test_roberta_keeps_its_table_for_the_lm_head_and_quantizes_everything_else():
    torch.manual_seed(0)
    model = build_for_vocab("roberta_d3_h256", 100, tokens_per_sample=16, encoder_layers=1).eval()
    tokens = torch.randint(4, 100, (2, 9))
    with torch.no_grad():
        reference = model(tokens)[0]
        quantize_linears_int8(model)
        assert quantize_embeddings_int8(model) == []  # the LM head multiplies by the table: it stays fp32
        out = model(tokens)[0]
    assert model.encoder.sentence_encoder.embed_tokens.weight is model.encoder.lm_head.weight
    assert 0 < relative_error(out, reference) < 0.05
