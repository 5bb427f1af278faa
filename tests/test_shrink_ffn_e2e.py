"""scripts/shrink_ffn_checkpoint.py on a real (tiny, trained) checkpoint: stock fairseq-generate decodes the shrunk
file exactly as --prune-ffn decodes the original, and stock fairseq-train fine-tunes it with the printed sizes."""
import re

import pytest
import torch

from clitools import bleu, json_log_records, run
from conftest import TINY_TRANSFORMER, TRAIN_SETTINGS
import fairseq_ext.plugin  # noqa: F401  (allows exactly what fairseq checkpoints hold)

pytestmark = pytest.mark.e2e

DECODE = ["--gen-subset", "test", "--beam", "2", "--batch-size", "40", "--distributed-world-size", "4",
          "--distributed-rank", "0", "--max-len-a", "1.2", "--max-len-b", "10", "--cpu", "--scoring", "sacrebleu",
          "--post-process", "sentencepiece"]


def hypotheses(output):
    return sorted(line for line in output.splitlines() if line.startswith("H-"))


@pytest.fixture(scope="module")
def shrunk(multi30k_2k, tiny_mt_checkpoint, tmp_path_factory):
    original = tiny_mt_checkpoint[0] / "checkpoint_last.pt"
    path = tmp_path_factory.mktemp("shrunk") / "half_ffn.pt"
    output = run(["scripts/shrink_ffn_checkpoint.py", original, "--prune-ffn", "0.5", "--out", path]).output
    return original, path, output


def test_the_shrunk_file_decodes_exactly_as_prune_ffn_does(multi30k_2k, shrunk):
    original, path, output = shrunk
    # 128 neurons per layer in the tiny model: 64 kept, one FFN block in the encoder and one in the decoder.
    assert "--encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64" in output
    before, after = map(lambda n: int(n.replace(",", "")), re.search(r"([\d,]+) -> ([\d,]+) parameters", output).groups())
    assert before - after == 2 * 64 * (64 + 1 + 64)  # each block: 64 fc1 rows + biases, 64 fc2 columns
    state = torch.load(path, weights_only=True)  # with no more than the plugin's safe loading allows
    assert state["model"]["encoder.layers.0.fc1.weight"].shape == (64, 64) and "last_optimizer_state" not in state
    stock = run(["fairseq-generate", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task", "translation",
                 "--path", path, *DECODE]).output
    # Both with fairseq's generator (the lean decoder's scores may differ from it in the last bit: see
    # test_lean_generation_e2e.py), so that only the file and the flag differ.
    flagged = run(["fairseq-generate", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task",
                   "compressed_translation", "--prune-ffn", "0.5", "--stock-generator", "--path", original,
                   *DECODE]).output
    # Every 4th batch of 40 sentences; the H- lines carry the scores, which must match to the last digit too.
    assert len(hypotheses(stock)) == 280 and hypotheses(stock) == hypotheses(flagged)
    assert bleu(stock) == bleu(flagged)


def test_stock_fairseq_train_fine_tunes_the_shrunk_file_with_the_printed_sizes(multi30k_2k, shrunk, tmp_path):
    _, path, output = shrunk
    shrunk_params = int(re.search(r"-> ([\d,]+) parameters", output).group(1).replace(",", ""))
    sizes = re.search(r"--finetune-from-model \S+ (.*)$", output, re.M).group(1).split()
    train = run(["fairseq-train", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task", "translation",
                 *TINY_TRANSFORMER, *TRAIN_SETTINGS, *sizes, "--finetune-from-model", path, "--max-update", "6",
                 "--save-dir", tmp_path]).output
    assert f"loading pretrained model from {path}" in train
    params = int(re.search(r"num\. shared model params: ([\d,]+)", train).group(1).replace(",", ""))
    assert params == shrunk_params
    first = json_log_records(train, "train_inner")[0]
    assert float(first["loss"]) < 10  # the trained weights, not a fresh start (log2 of the 2k vocabulary: 11)
    assert (tmp_path / "checkpoint_last.pt").is_file()


def test_bad_input_is_reported_together_before_anything_is_read(tmp_path):
    proc = run(["scripts/shrink_ffn_checkpoint.py", tmp_path / "missing.pt", "--prune-ffn", "1.5", "--out",
                tmp_path / "out.pt"], check=False)
    assert proc.returncode == 2 and not (tmp_path / "out.pt").exists()
    error = proc.output.strip().splitlines()[-1]
    assert "missing.pt: no such checkpoint" in error and "--prune-ffn must be in [0, 1)" in error
