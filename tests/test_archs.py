"""The model-size grids (fairseq_ext/models/*_grid.py), their description (fairseq_ext/models/arch_description.py)
and scripts/arch_table.py, against real fairseq."""
import argparse
import copy
import csv
import importlib
import io
import json

import pytest
import torch
from fairseq import options
from fairseq.data import Dictionary
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_INV_REGISTRY, ARCH_MODEL_NAME_REGISTRY
from fairseq.models.roberta.model import RobertaModel

import fairseq_ext.models.roberta_grid as roberta_grid
import fairseq_ext.models.transformer_grid as transformer_grid
from clitools import REPO, clean_env, json_log_records, run
from conftest import TRAIN_SETTINGS
from fairseq_ext.models.arch_description import (
    COLUMNS,
    describe,
    format_table,
    matching_archs,
    train_flops_per_token,
)
from fairseq_ext.models.grid import GRID_ARCHS, build_for_vocab

ROBERTA = [f"roberta_d{d}_h{h}" for d in [3, 6, 12, 18, 24] for h in [256, 512, 768, 1024, 1536]]
MT = [f"transformer_wmt_en_fr_d{d}_h{w}" for d in [2, 4, 6, 8, 12]
      for w in [128, 192, 256, 384, 512, 768, 1024, 1536, 2048]]
TINY_VOCAB = 16


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def shapes(model):
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def parse(*argv):
    """fairseq-train's own argument parsing (data path unused: nothing is loaded)."""
    parser = options.get_training_parser()
    return options.parse_args_and_arch(parser, ["/no/data", "--user-dir", str(REPO / "fairseq_ext"), *argv])


def test_exactly_the_spec_grid_is_registered_on_the_stock_models():
    assert list(GRID_ARCHS) == ROBERTA + MT
    assert all(ARCH_MODEL_NAME_REGISTRY[a] == "roberta" for a in ROBERTA)
    assert all(ARCH_MODEL_NAME_REGISTRY[a] == "transformer" for a in MT)


@pytest.mark.parametrize("arch", ROBERTA + MT)
def test_every_arch_builds_with_its_grid_shape(arch):
    depth, width = GRID_ARCHS[arch]
    model = build_for_vocab(arch, TINY_VOCAB, device="meta")
    stacks = [model.encoder.sentence_encoder] if arch in ROBERTA else [model.encoder, model.decoder]
    for stack in stacks:
        assert len(stack.layers) == depth
        layer = stack.layers[0]
        assert layer.self_attn.embed_dim == width and layer.self_attn.num_heads == width // 64
        assert layer.fc1.out_features == 4 * width
    if arch in ROBERTA:  # pre-LayerNorm by default: the encoder ends in a LayerNorm
        assert model.args.encoder_normalize_before and model.encoder.sentence_encoder.layer_norm is not None
    else:  # Vaswani big: post-norm, dropout 0.1, all embeddings shared
        assert not model.args.encoder_normalize_before and not model.args.decoder_normalize_before
        assert model.args.dropout == 0.1
        assert model.encoder.embed_tokens.weight is model.decoder.embed_tokens.weight
        assert model.decoder.output_projection.weight is model.encoder.embed_tokens.weight


@pytest.fixture
def one_thread():
    """Tiny batches gain nothing from intra-op threads, while on a busy 2-core machine OpenMP's
    spinning threads made the deep model's backward 15x slower (13.6 s instead of 0.8 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The smallest point of each grid and the deepest RoBERTa (24 pre-LN layers); wider ones only cost time.
@pytest.mark.parametrize("arch", ["roberta_d3_h256", "transformer_wmt_en_fr_d2_h256", "roberta_d24_h512"])
def test_forward_and_backward_on_cpu(arch, one_thread):
    torch.manual_seed(0)
    model = build_for_vocab(arch, TINY_VOCAB)
    tokens = torch.randint(4, TINY_VOCAB, (2, 7))
    if arch in ROBERTA:
        logits, _ = model(tokens)
    else:
        logits, _ = model(tokens, torch.tensor([7, 7]), tokens)
    assert logits.shape == (2, 7, TINY_VOCAB)
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("arch", ["roberta_d3_h256", "roberta_d6_h512", "transformer_wmt_en_fr_d2_h256"])
def test_table_counts_are_those_of_real_cpu_models(arch):
    row = describe(arch, vocab_size=1000, seq_len=128)
    model = build_for_vocab(arch, 1000, tokens_per_sample=128)
    assert row["params"] == n_params(model)
    assert row["embedding_params"] + row["non_embedding_params"] == row["params"]
    width = GRID_ARCHS[arch][1]
    positions = 130 * width if arch in ROBERTA else 0  # learned positions: tokens_per_sample + 2
    assert row["embedding_params"] == 1000 * width + positions


def post_norm_layer(d, attentions):
    """Parameters of a transformer layer of width d: its attentions (q, k, v, out: d x d + bias), a 4d FFN and a
    LayerNorm (weight + bias) after each sublayer."""
    attention = 4 * (d * d + d)
    ffn = (d * 4 * d + 4 * d) + (4 * d * d + d)
    return attentions * attention + ffn + (attentions + 1) * 2 * d


def test_counts_and_flops_by_hand_for_the_vaswani_big_shape_and_a_roberta():
    """The table's figures against counts written out layer by layer (not read off the built model)."""
    d, vocab, n = 1024, 32000, 32
    row = describe("transformer_wmt_en_fr_d6_h1024", vocab_size=vocab, seq_len=n)
    # 6 encoder layers (self-attention), 6 decoder layers (self + cross), post-norm: no final LayerNorm;
    # sinusoidal positions; one d x V matrix for source, target and output embeddings.
    body = 6 * post_norm_layer(d, 1) + 6 * post_norm_layer(d, 2)
    assert (row["params"], row["embedding_params"], row["non_embedding_params"]) == (body + vocab * d, vocab * d, body)
    attention_layers = 6 + 2 * 6
    flops = 6 * body + 6 * d * vocab + 12 * attention_layers * n * d
    assert row["train_gflops_per_token"] == round(flops / 1e9, 3)
    assert train_flops_per_token("transformer_wmt_en_fr_d6_h1024", vocab, 31.6) == round(flops / 1e9, 3) * 1e9
    assert (row["fp32_mib"], row["fp16_mib"]) == (round(4 * row["params"] / 2**20, 1), round(2 * row["params"] / 2**20, 1))

    d, vocab, n = 256, 1000, 128
    row = describe("roberta_d3_h256", vocab_size=vocab, seq_len=n)
    # pre-LN: the same layers, plus the embedding LayerNorm and the final one; learned positions (n + 2);
    # the LM head: dense d x d + bias, LayerNorm, output bias (V), its projection tied to the token embedding.
    body = 3 * post_norm_layer(d, 1) + 2 * 2 * d
    head = d * d + d + 2 * d + vocab
    embedding = vocab * d + (n + 2) * d
    assert (row["params"], row["embedding_params"]) == (body + head + embedding, embedding)
    flops = 6 * body + 6 * 0.15 * (head + vocab * d) + 12 * 3 * n * d  # only the masked 15% go through the head
    assert row["train_gflops_per_token"] == round(flops / 1e9, 3)


@pytest.mark.parametrize("pattern, expected", [
    ("roberta_d12_*", [f"roberta_d12_h{h}" for h in [256, 512, 768, 1024, 1536]]),
    ("roberta_d1*", [f"roberta_d{d}_h{h}" for d in [12, 18] for h in [256, 512, 768, 1024, 1536]]),  # glob first
    ("_d6_h1024$", ["roberta_d6_h1024", "transformer_wmt_en_fr_d6_h1024"]),  # no glob match: a regex
    ("h(192|384)$", [f"transformer_wmt_en_fr_d{d}_h{w}" for d in [2, 4, 6, 8, 12] for w in [192, 384]]),
    ("roberta_d5_*", []),
    ("(", []),  # neither a glob match nor a valid regex
    (None, ROBERTA + MT),
])
def test_filter_takes_a_glob_on_the_whole_name_or_else_a_regex(pattern, expected):
    assert matching_archs(pattern) == expected


def test_table_formats_hold_the_rows():
    rows = [describe(arch, vocab_size=1000, seq_len=64) for arch in ["roberta_d3_h256", "transformer_wmt_en_fr_d2_h128"]]
    assert json.loads(format_table(rows, "json")) == rows
    as_csv = list(csv.DictReader(io.StringIO(format_table(rows, "csv"))))
    assert list(as_csv[0]) == COLUMNS
    assert [{k: str(v) for k, v in row.items()} for row in rows] == as_csv
    header, rule, *lines = format_table(rows, "md").splitlines()
    assert header == "| " + " | ".join(COLUMNS) + " |" and rule == "|" + "---|" * len(COLUMNS)
    cells = [line.strip("| ").split(" | ") for line in lines]
    assert [c[COLUMNS.index("params")] for c in cells] == [f"{row['params']:,}" for row in rows]  # 1,234,567
    assert [c[COLUMNS.index("train_gflops_per_token")] for c in cells] == [str(row["train_gflops_per_token"])
                                                                          for row in rows]
    with pytest.raises(ValueError, match="unknown table format"):
        format_table(rows, "html")


def test_arch_table_prints_every_grid_arch_with_the_real_models_counts():
    rows = {row["arch"]: row for row in json.loads(run(["scripts/arch_table.py", "--format", "json"]).stdout)}
    assert list(rows) == ROBERTA + MT
    big = rows["roberta_d24_h1536"]
    assert (big["depth"], big["width"], big["heads"], big["ffn"]) == (24, 1536, 24, 6144)
    assert big["params"] == n_params(build_for_vocab("roberta_d24_h1536", 50265, device="meta"))
    assert big["fp16_mib"] == pytest.approx(big["fp32_mib"] / 2, abs=0.1)
    assert rows["transformer_wmt_en_fr_d2_h256"] == describe("transformer_wmt_en_fr_d2_h256")  # 32000, 32: defaults


def test_arch_table_filters_and_sizes_from_the_command_line():
    out = run(["scripts/arch_table.py", "--filter", "_d6_h1024$", "--vocab-size", "1000", "--seq-len", "64"]).stdout
    assert out == format_table([describe(arch, 1000, 64) for arch in ["roberta_d6_h1024",
                                                                      "transformer_wmt_en_fr_d6_h1024"]], "md")
    proc = run(["scripts/arch_table.py", "--filter", "roberta_d5_*"], check=False)
    assert proc.returncode == 2
    assert "--filter 'roberta_d5_*' matches none of the 70 grid archs" in proc.stderr.splitlines()[-1]


def test_d6_h1024_is_exactly_the_stock_vaswani_en_fr_big():
    for vocab in [TINY_VOCAB, 32000]:
        grid = build_for_vocab("transformer_wmt_en_fr_d6_h1024", vocab, device="meta")
        stock = build_for_vocab("transformer_vaswani_wmt_en_fr_big", vocab, device="meta", share_all_embeddings=True)
        assert shapes(grid) == shapes(stock)
        assert n_params(grid) == n_params(stock)
    assert vars(grid.args) == vars(stock.args) | {"arch": "transformer_wmt_en_fr_d6_h1024"}


def build_parsed(args, vocab_size):
    """The model fairseq-train would build from parsed ``args`` for a ``vocab_size`` dictionary."""
    return build_for_vocab(args.arch, vocab_size, device="meta", **{k: v for k, v in vars(args).items() if k != "arch"})


def test_roberta_d12_h768_with_post_norm_is_roberta_base():
    roberta = ["--task", "masked_lm", "--tokens-per-sample", "512", "--arch"]
    base = build_parsed(parse(*roberta, "roberta_base"), 50265)
    post = build_parsed(parse(*roberta, "roberta_d12_h768", "--post-norm"), 50265)
    assert post.args.encoder_normalize_before is False
    assert shapes(post) == shapes(base) and n_params(post) == n_params(base) == 124_696_665
    pre = build_parsed(parse(*roberta, "roberta_d12_h768"), 50265)
    assert set(shapes(pre)) - set(shapes(base)) == {  # pre-norm's final LayerNorm
        "encoder.sentence_encoder.layer_norm.weight", "encoder.sentence_encoder.layer_norm.bias"}


def test_command_line_values_beat_the_preset():
    args = parse("--task", "masked_lm", "--arch", "roberta_d3_h256", "--encoder-layers", "5")
    assert (args.encoder_layers, args.encoder_embed_dim, args.encoder_attention_heads) == (5, 256, 4)
    assert args.encoder_normalize_before is True and not hasattr(args, "post_norm")

    args = parse("--arch", "transformer_wmt_en_fr_d2_h256", "--encoder-layers", "5", "--dropout", "0.3",
                 "--encoder-normalize-before", "--decoder-normalize-before")
    assert (args.encoder_layers, args.decoder_layers, args.decoder_embed_dim) == (5, 2, 256)
    assert args.dropout == 0.3 and args.share_all_embeddings
    assert args.encoder_normalize_before and args.decoder_normalize_before

    args = parse("--task", "masked_lm", "--arch", "roberta_d6_h512", "--encoder-embed-dim", "1024")
    assert (args.encoder_attention_heads, args.encoder_ffn_embed_dim) == (16, 4096)  # 64-dim heads, 4x FFN


@pytest.mark.parametrize("argv", [["--arch", "transformer_wmt_en_fr_d4_h768", "--encoder-layers", "3"],
                                  ["--task", "masked_lm", "--arch", "roberta_d18_h1024", "--post-norm"]])
def test_rerunning_the_arch_function_as_checkpoint_loading_does_changes_nothing(argv):
    args = parse(*argv)
    again = copy.deepcopy(args)
    ARCH_CONFIG_REGISTRY[args.arch](again)
    assert vars(again) == vars(args)


def test_registration_and_the_post_norm_flag_are_idempotent():
    before = {name: list(archs) for name, archs in ARCH_MODEL_INV_REGISTRY.items()}
    add_args = RobertaModel.add_args
    importlib.reload(roberta_grid)
    importlib.reload(transformer_grid)
    assert {name: list(archs) for name, archs in ARCH_MODEL_INV_REGISTRY.items()} == before
    assert RobertaModel.add_args is add_args
    assert list(GRID_ARCHS) == ROBERTA + MT
    assert parse("--task", "masked_lm", "--arch", "roberta_d3_h256", "--post-norm").encoder_normalize_before is False


def test_stock_archs_are_unchanged():
    args = parse("--task", "masked_lm", "--arch", "roberta_base")
    assert args.encoder_normalize_before is False and args.encoder_layers == 12
    stock = argparse.Namespace()
    ARCH_CONFIG_REGISTRY["transformer_vaswani_wmt_en_fr_big"](stock)
    assert stock.share_all_embeddings is False


@pytest.mark.e2e
def test_unknown_arch_is_fairseqs_invalid_choice_listing_the_grid(tmp_path):
    proc = run(["fairseq-train", tmp_path, "--user-dir", "fairseq_ext", "--arch", "roberta_d5_h300"], check=False)
    assert proc.returncode == 2
    assert "argument --arch/-a: invalid choice: 'roberta_d5_h300'" in proc.stderr
    assert "'roberta_d3_h256'" in proc.stderr and "'transformer_wmt_en_fr_d12_h2048'" in proc.stderr


@pytest.mark.e2e
def test_grid_arch_trains_on_real_multi30k_with_the_tables_parameter_count(multi30k_2k):
    arch = "transformer_wmt_en_fr_d2_h256"
    env = clean_env()
    env["OMP_NUM_THREADS"] = "1"  # small batches: a second thread only spins on a busy 2-core machine
    proc = run(["fairseq-train", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task", "translation",
                "--arch", arch, *TRAIN_SETTINGS, "--max-tokens", "1000", "--max-update", "3",
                "--disable-validation", "--no-save"], env=env)
    last = json_log_records(proc.output, "train")[-1]
    assert last["train_num_updates"] == "3" and float(last["train_loss"]) < 15
    vocab = len(Dictionary.load(str(multi30k_2k / "bin" / "dict.en.txt")))
    assert f"num. shared model params: {describe(arch, vocab)['params']:,}" in proc.output
