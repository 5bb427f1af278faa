"""compressed_masked_lm on the Multi30k English captions and compressed_sentence_prediction on SST-2, through the
real fairseq CLIs: pretrain a tiny RoBERTa a few updates, finetune it on SST-2 with pruning, validate compressed."""
import gzip
import itertools
import re

import pytest

from clitools import compressed_summary, json_log_records, run
from conftest import CLEAN_EXIT

pytestmark = pytest.mark.e2e

TINY_ROBERTA = ["--arch", "roberta_d3_h256", "--encoder-layers", "1", "--encoder-embed-dim", "64",
                "--encoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2", "--max-positions", "64"]
SETTINGS = ["--optimizer", "adam", "--lr", "1e-3", "--batch-size", "32", "--seed", "1", "--cpu", "--num-workers",
            "0", "--no-progress-bar", "--log-format", "json", "--log-interval", "5", "--no-epoch-checkpoints",
            *CLEAN_EXIT]


def encode(spm_model, lines):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_model))
    return "".join(" ".join(sp.encode(line.strip(), out_type=str)) + "\n" for line in lines)


def valid_figures(output):
    lines = [line for line in output.splitlines() if "valid on 'valid' subset" in line]
    assert lines, output[-3000:]
    return {k: float(v) for k, v in re.findall(r"\| (\w+) ([\d.]+)", lines[-1])}


@pytest.fixture(scope="session")
def mono_bin(shared_data, multi30k_2k, tmp_path_factory):
    """2,000 + 200 English captions (multi30k/mono), encoded with the Multi30k sentencepiece model, --only-source."""
    out = tmp_path_factory.mktemp("mono")
    with gzip.open(shared_data / "multi30k" / "mono" / "train.1.en.gz", "rt", encoding="utf-8") as f:
        lines = list(itertools.islice(f, 2200))
    (out / "train.bpe").write_text(encode(multi30k_2k / "spm.model", lines[:2000]))
    (out / "valid.bpe").write_text(encode(multi30k_2k / "spm.model", lines[2000:]))
    run(["fairseq-preprocess", "--only-source", "--trainpref", out / "train.bpe", "--validpref", out / "valid.bpe",
         "--destdir", out / "bin", "--workers", "1"])
    return out / "bin"


@pytest.fixture(scope="session")
def mlm_checkpoint(mono_bin, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("mlm")
    run(["fairseq-train", mono_bin, "--user-dir", "fairseq_ext", "--task", "compressed_masked_lm", *TINY_ROBERTA,
         "--tokens-per-sample", "64", "--criterion", "masked_lm", *SETTINGS, "--max-update", "20",
         "--disable-validation", "--save-dir", save_dir])
    return save_dir / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def sst2_bin(shared_data, multi30k_2k, mono_bin, tmp_path_factory):
    """SST-2 as fairseq's RoBERTa GLUE example lays it out: bin/input0 (the pretraining dictionary), bin/label."""
    out = tmp_path_factory.mktemp("sst2")
    for split, source, size in (("train", "train.tsv", 640), ("valid", "dev.tsv", 200)):
        rows = [line.rstrip("\n").split("\t") for line in
                (shared_data / "sst2" / source).read_text(encoding="utf-8").splitlines()[:size]]
        (out / f"{split}.input0").write_text(encode(multi30k_2k / "spm.model", [r[0] for r in rows]))
        (out / f"{split}.label").write_text("".join(r[1] + "\n" for r in rows))
    for kind, extra in (("input0", ["--srcdict", mono_bin / "dict.txt"]), ("label", [])):
        run(["fairseq-preprocess", "--only-source", "--trainpref", out / f"train.{kind}", "--validpref",
             out / f"valid.{kind}", "--destdir", out / "bin" / kind, "--workers", "1", *extra])
    return out / "bin"


@pytest.fixture(scope="session")
def sst2_finetune(sst2_bin, mlm_checkpoint, tmp_path_factory):
    """Finetune the MLM checkpoint on SST-2 with 50% one-shot pruning from the first update."""
    save_dir = tmp_path_factory.mktemp("sst2_ft")
    proc = run(["fairseq-train", sst2_bin, "--user-dir", "fairseq_ext", "--task", "compressed_sentence_prediction",
                *TINY_ROBERTA, "--num-classes", "2", "--init-token", "0", "--separator-token", "2",
                "--shorten-method", "truncate", "--criterion", "sentence_prediction", *SETTINGS,
                "--restore-file", mlm_checkpoint, "--reset-optimizer", "--reset-dataloader", "--reset-meters",
                "--reset-lr-scheduler", "--max-update", "20", "--best-checkpoint-metric", "accuracy",
                "--maximize-best-checkpoint-metric", "--prune-sparsity", "0.5", "--save-dir", save_dir])
    return save_dir / "checkpoint_last.pt", proc.output


def test_masked_lm_validates_dense_and_compressed(mono_bin, mlm_checkpoint):
    validate = ["fairseq-validate", mono_bin, "--user-dir", "fairseq_ext", "--task", "compressed_masked_lm",
                "--path", mlm_checkpoint, "--valid-subset", "valid", "--batch-size", "64", "--cpu"]
    dense_output = run(validate).output
    # 2 bits: ternary weights, embeddings included, visibly hurt even a model this briefly trained.
    compressed_output = run([*validate, "--prune-sparsity", "0.9", "--quant-bits", "2"]).output
    dense, compressed = valid_figures(dense_output), valid_figures(compressed_output)
    assert compressed_summary(dense_output)["ratio"] == 1.0
    summary = compressed_summary(compressed_output)
    assert (summary["sparsity"], summary["bits"]) == (0.9, 2) and summary["ratio"] > 10
    assert compressed["sparsity"] == 0.9 and compressed["model_mb"] == pytest.approx(summary["compressed_mb"], abs=1e-3)
    assert compressed["loss"] > dense["loss"] + 0.2
    # The same bytes, calibrated on masked-LM samples: SparseGPT + GPTQ lose less than magnitude + round-to-nearest.
    calibrated_output = run([*validate, "--prune-sparsity", "0.9", "--quant-bits", "2", "--prune-method",
                             "sparsegpt", "--quant-method", "gptq", "--calib-samples", "64"]).output
    calibrated = compressed_summary(calibrated_output)
    assert calibrated["calibration"]["samples"] == 64 and calibrated["calibration"]["stages"] >= 2
    assert calibrated["compressed_mb"] == pytest.approx(summary["compressed_mb"], rel=0.02)
    assert valid_figures(calibrated_output)["loss"] < compressed["loss"]


def test_sentence_prediction_finetunes_pruned_and_validates_accuracy(sst2_bin, sst2_finetune):
    checkpoint, output = sst2_finetune
    assert "Loaded checkpoint" in output and "Overwriting classification_heads" in output  # from the MLM, new head
    inner = json_log_records(output, "train_inner")
    assert inner and all(float(r["sparsity"]) == 0.5 for r in inner)
    # --criterion: stock fairseq-validate cannot resolve sentence_prediction's classification_head_name, an
    # interpolation of the criterion config, without it (the same with --task sentence_prediction).
    validate = ["fairseq-validate", sst2_bin, "--user-dir", "fairseq_ext", "--task",
                "compressed_sentence_prediction", "--criterion", "sentence_prediction", "--path", checkpoint,
                "--valid-subset", "valid", "--batch-size", "64", "--cpu"]
    # 50% pruned by magnitude (the saved flag), 8-bit by GPTQ calibrated through the classification head
    compressed_output = run([*validate, "--quant-bits", "8", "--quant-method", "gptq", "--calib-samples", "32"]).output
    figures = valid_figures(compressed_output)
    assert 0.0 <= figures["accuracy"] <= 100.0 and figures["sparsity"] == 0.5
    summary = compressed_summary(compressed_output)
    assert (summary["bits"], summary["quant_method"], summary["prune_method"]) == (8, "gptq", "magnitude")
    # one encoder layer, the head's dense and out_proj; the unused masked-LM head stays round-to-nearest
    assert summary["calibration"]["stages"] == 3 and summary["calibration"]["uncalibrated"] >= 1
    # The same checkpoint on int4 kernels (4-bit, groups of 32): every Linear runs the simulated grid's codes; the
    # token table stays a float, which the masked-LM head reads; accuracy within bf16 rounding of the simulation.
    four_bit = ["--quant-bits", "4", "--quant-granularity", "group", "--quant-group-size", "32"]
    simulated_output = run([*validate, *four_bit]).output
    int4_output = run([*validate, *four_bit, "--int4-kernels"]).output
    int4 = compressed_summary(int4_output)
    assert int4["int4_linears"] >= 8 and int4["float_linears"] == 0 and int4["int4_embeddings"] == 0
    assert int4["runtime_mb"] < compressed_summary(simulated_output)["runtime_mb"]  # the float table dominates here
    assert abs(valid_figures(int4_output)["accuracy"] - valid_figures(simulated_output)["accuracy"]) <= 2.0
