"""The model-size grids (fairseq_ext/models/*_grid.py) and scripts/arch_table.py, against real fairseq."""
import argparse
import copy
import importlib
import importlib.util
import io
import json
from contextlib import redirect_stdout

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
from fairseq_ext.models.grid import GRID_ARCHS, build_for_vocab

_spec = importlib.util.spec_from_file_location("arch_table", REPO / "scripts" / "arch_table.py")
arch_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(arch_table)

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
    row = arch_table.describe(arch, vocab_size=1000, seq_len=128)
    model = build_for_vocab(arch, 1000, tokens_per_sample=128)
    assert row["params"] == n_params(model)
    assert row["embedding_params"] + row["non_embedding_params"] == row["params"]
    width = GRID_ARCHS[arch][1]
    positions = 130 * width if arch in ROBERTA else 0  # learned positions: tokens_per_sample + 2
    assert row["embedding_params"] == 1000 * width + positions


def test_whole_table_prints_every_grid_arch():
    rows = {row["arch"]: row for row in json.loads("\n".join(table("--format", "json")))}
    assert list(rows) == ROBERTA + MT
    big = rows["roberta_d24_h1536"]
    assert (big["depth"], big["width"], big["heads"], big["ffn"]) == (24, 1536, 24, 6144)
    assert big["params"] == n_params(build_for_vocab("roberta_d24_h1536", 50265, device="meta"))
    assert big["fp16_mib"] == pytest.approx(big["fp32_mib"] / 2, abs=0.1)


def table(*argv):
    out = io.StringIO()
    with redirect_stdout(out):
        arch_table.main(list(argv))
    return out.getvalue().splitlines()


def test_table_filter_takes_a_glob_or_a_regex_and_prints_csv_or_markdown():
    csv_lines = table("--filter", "roberta_d12_*", "--format", "csv")
    assert csv_lines[0].split(",") == arch_table.COLUMNS
    assert [line.split(",")[0] for line in csv_lines[1:]] == [f"roberta_d12_h{h}" for h in [256, 512, 768, 1024, 1536]]
    assert len(table("--filter", "roberta_d1*", "--format", "csv")) == 1 + 10  # d12 and d18, not every roberta
    md_lines = table("--filter", "_d6_h1024$")
    assert [line.split(" | ")[0] for line in md_lines[2:]] == ["| roberta_d6_h1024", "| transformer_wmt_en_fr_d6_h1024"]


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
    assert f"num. shared model params: {arch_table.describe(arch, vocab)['params']:,}" in proc.output
