"""--autocast-bf16 in the real fairseq-train on real Multi30k: it tracks fp32, its checkpoints are ordinary fp32 ones
that stock fairseq-generate decodes, and pruning schedules and quantization-aware training run under it."""
import os

import pytest
import torch

from clitools import json_log_records, run
from conftest import TINY_TRANSFORMER, TRAIN_SETTINGS
from fairseq_ext.tasks.bf16_autocast import autocast_device

pytestmark = pytest.mark.e2e

UPDATES = 40
# Relative gap allowed between the bf16 and fp32 training loss at each logged interval of the same seed: bf16 keeps
# 8 bits of mantissa in the matmuls, and the runs drift apart a little more with every update.
LOSS_TOLERANCE = 0.02


def train(data, save_dir, *extra):
    proc = run(["fairseq-train", data / "bin", "--user-dir", "fairseq_ext", "--task", "compressed_translation",
                *TINY_TRANSFORMER, "--encoder-normalize-before", "--decoder-normalize-before", *TRAIN_SETTINGS,
                "--max-update", str(UPDATES), "--save-dir", save_dir, "--validate-interval-updates", "20",
                "--max-valid-steps", "2", *extra])
    return proc.output


@pytest.fixture(scope="module")
def fp32_and_bf16(multi30k_2k, tmp_path_factory):
    outputs = {}
    for name, extra in (("fp32", []), ("bf16", ["--autocast-bf16"])):
        save_dir = tmp_path_factory.mktemp(name)
        outputs[name] = (save_dir, train(multi30k_2k, save_dir, *extra))
    return outputs


def losses(output, kind="train_inner"):
    key = "loss" if kind == "train_inner" else f"{kind}_loss"
    return [float(r[key]) for r in json_log_records(output, kind)]


def native_bf16_cpu():
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def test_bf16_training_loss_tracks_fp32_from_the_same_seed(fp32_and_bf16):
    fp32, bf16 = losses(fp32_and_bf16["fp32"][1]), losses(fp32_and_bf16["bf16"][1])
    assert len(fp32) == len(bf16) == UPDATES // 5
    assert "--autocast-bf16: forward and loss under torch.autocast(cpu, bfloat16)" in fp32_and_bf16["bf16"][1]
    assert "--autocast-bf16:" not in fp32_and_bf16["fp32"][1]
    if native_bf16_cpu():
        # Elsewhere torch emulates bf16 and this tiny model's losses can agree to the log's 3 decimals.
        assert bf16 != fp32, "the bf16 run logged exactly the fp32 losses: autocast did not run"
    for step, (a, b) in enumerate(zip(fp32, bf16)):
        assert abs(a - b) <= LOSS_TOLERANCE * a, f"interval {step}: fp32 loss {a}, bf16 {b}"
    assert bf16[-1] < bf16[0] - 2, f"bf16 training did not learn: {bf16}"
    valid_fp32, valid_bf16 = losses(fp32_and_bf16["fp32"][1], "valid"), losses(fp32_and_bf16["bf16"][1], "valid")
    assert len(valid_bf16) == len(valid_fp32) >= 2
    assert abs(valid_bf16[-1] - valid_fp32[-1]) <= LOSS_TOLERANCE * valid_fp32[-1]


def test_bf16_checkpoint_is_fp32_and_decodes_in_stock_generate(fp32_and_bf16, multi30k_2k):
    checkpoint = fp32_and_bf16["bf16"][0] / "checkpoint_last.pt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    dtypes = {t.dtype for t in state["model"].values() if t.is_floating_point()}
    assert dtypes == {torch.float32}
    output = run(["fairseq-generate", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task", "translation",
                  "--path", checkpoint, "--gen-subset", "test", "--batch-size", "40", "--distributed-world-size", "5",
                  "--distributed-rank", "0",
                  "--beam", "2", "--max-len-a", "1.2", "--max-len-b", "10", "--cpu", "--scoring", "sacrebleu",
                  "--post-process", "sentencepiece", "--required-batch-size-multiple", "1"]).output
    hypotheses = [line.split("\t")[2] for line in output.splitlines() if line.startswith("H-")]
    assert len(hypotheses) == 200 and all(h.strip() for h in hypotheses)  # every 5th batch of 40: this shard's
    assert "BLEU = " in output


def test_pruning_schedule_and_quantization_aware_training_under_bf16(multi30k_2k, tmp_path):
    output = train(multi30k_2k, tmp_path, "--autocast-bf16", "--prune-sparsity", "0.5", "--prune-schedule",
                   "gradual", "--prune-end-update", "30", "--prune-every", "10", "--quant-bits", "4", "--quant-aware")
    records = json_log_records(output, "train_inner")
    assert [float(r["sparsity"]) for r in records][-1] == pytest.approx(0.5, abs=1e-3)
    assert float(records[-1]["loss"]) < float(records[0]["loss"])
    state = torch.load(tmp_path / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    linear = [t for name, t in state["model"].items() if name.endswith("fc1.weight")]
    zeros = sum(int((t == 0).sum()) for t in linear) / sum(t.numel() for t in linear)
    assert zeros > 0.3  # global magnitude pruning: the FFN matrices carry their share of the 50%


def test_autocast_refuses_weights_that_are_not_fp32():
    assert autocast_device(torch.nn.Linear(2, 2)) == "cpu"
    with pytest.raises(ValueError, match="--autocast-bf16 keeps fp32 weights.*torch.bfloat16.*--fp16"):
        autocast_device(torch.nn.Linear(2, 2).bfloat16())


def test_validating_a_bf16_checkpoint_stays_fp32(fp32_and_bf16, multi30k_2k):
    """The checkpoint's saved task config keeps --autocast-bf16, which fairseq-validate reuses: it must not turn an
    evaluation into a bf16 one. Forcing the flag off must therefore change nothing, to the last digit."""
    checkpoint = fp32_and_bf16["bf16"][0] / "checkpoint_last.pt"

    def valid_loss(*extra):
        output = run(["fairseq-validate", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task",
                      "compressed_translation", "--path", checkpoint, "--cpu", "--max-tokens", "4000", "--max-valid-steps", "2",
                      *extra]).output
        return [line for line in output.splitlines() if "valid on 'valid' subset" in line][-1].split("| loss ")[1]

    assert valid_loss() == valid_loss("--model-overrides", "{'task': {'autocast_bf16': False}}")
