"""fairseq-generate --int4-kernels on a real (tiny, trained) Multi30k checkpoint: the model decodes on torch's CPU
int4 kernels what the simulated 4-bit model decodes; a packed file decodes the same, built straight from its codes;
what cannot run is refused at start-up (or at load, for what only the model tells), naming the flag."""
import re

import pytest

from clitools import compressed_summary, run

pytestmark = pytest.mark.e2e

# The shard of test_int8_e2e.py: every 4th batch of 40 test sentences.
DECODE = ["--task", "compressed_translation", "--gen-subset", "test", "--beam", "2", "--batch-size", "40",
          "--distributed-world-size", "4", "--distributed-rank", "0", "--max-len-a", "1.2", "--max-len-b", "10",
          "--cpu", "--scoring", "sacrebleu", "--post-process", "sentencepiece"]
FOUR_BIT = ["--quant-bits", "4", "--quant-granularity", "group", "--quant-group-size", "32"]


def generate(multi30k_2k, path, *flags, check=True):
    return run(["fairseq-generate", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--path", path, *DECODE,
                *flags], check=check)


def hypotheses(output):
    """{sentence id: (hypothesis, [positional scores])}."""
    text = dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", output, re.M))
    scores = dict(re.findall(r"^P-(\d+)\t(.*)$", output, re.M))
    return {i: (text[i], [float(s) for s in scores[i].split()]) for i in text}


@pytest.fixture(scope="module")
def runs(multi30k_2k, tiny_mt_checkpoint, tmp_path_factory):
    checkpoint = tiny_mt_checkpoint[0] / "checkpoint_last.pt"
    packed = tmp_path_factory.mktemp("int4") / "tiny_q4g32.fxc"
    run(["scripts/pack_checkpoint.py", checkpoint, "--out", packed, *FOUR_BIT])
    return {
        "simulated": generate(multi30k_2k, checkpoint, *FOUR_BIT).output,
        "int4": generate(multi30k_2k, checkpoint, *FOUR_BIT, "--int4-kernels").output,
        "packed": generate(multi30k_2k, packed, "--int4-kernels").output,
    }


def test_the_int4_model_decodes_what_the_simulated_4bit_model_decodes(runs):
    simulated, int4 = hypotheses(runs["simulated"]), hypotheses(runs["int4"])
    assert len(int4) == len(simulated) == 280
    # Same codes, same grid; the kernel's bf16 activations and scales move token scores a little, and a near tie
    # of two beams can flip: at least 90% of the sentences decode to the same words, each token's log-probability
    # within 0.1 of the simulated model's.
    same = [i for i in simulated if simulated[i][0] == int4[i][0]]
    assert len(same) >= 0.9 * len(simulated), len(same)
    worst = max(abs(a - b) for i in same for a, b in zip(simulated[i][1], int4[i][1]))
    assert 0 < worst < 0.1, worst
    figures = compressed_summary(runs["int4"])
    assert figures["int4_linears"] == (4 + 2) + (4 + 4 + 2) + 1 and figures["int4_embeddings"] == 2
    assert figures["float_linears"] == 0
    # Runtime: half a byte a weight and a bf16 scale and zero per 32 columns, where the accounting counts a float32
    # scale and a uint8 zero point: within 1.15x the accounted bytes; the simulated model holds float32.
    assert figures["compressed_mb"] * 0.9 < figures["runtime_mb"] < 1.15 * figures["compressed_mb"]
    simulated_figures = compressed_summary(runs["simulated"])
    assert simulated_figures["runtime_mb"] == simulated_figures["fp32_mb"]


def test_a_packed_file_decodes_on_int4_kernels_from_its_codes(runs):
    figures, from_pt = compressed_summary(runs["packed"]), compressed_summary(runs["int4"])
    assert figures["from_codes"] is True
    assert {k: figures[k] for k in from_pt if k != "from_codes"} == from_pt  # same bytes, same modules
    assert hypotheses(runs["packed"]) == hypotheses(runs["int4"])  # the same codes, the same kernels


def test_what_int4_kernels_cannot_run_is_refused_naming_the_flag(multi30k_2k, tiny_mt_checkpoint):
    checkpoint = tiny_mt_checkpoint[0] / "checkpoint_last.pt"
    start_up = generate(multi30k_2k, checkpoint, "--int4-kernels", "--quant-bits", "8", "--quant-granularity",
                        "group", "--quant-group-size", "48", "--prune-ffn", "0.5", check=False)
    assert start_up.returncode != 0 and "invalid compression flags (3 problems)" in start_up.output
    assert "got --quant-bits 8); for 5..8 bits use --int8-kernels" in start_up.output
    assert "--quant-group-size 48 is not a multiple of 32" in start_up.output
    assert "--prune-ffn would cut through: drop one or the other" in start_up.output
    half = generate(multi30k_2k, checkpoint, *FOUR_BIT, "--int4-kernels", "--fp16", check=False)
    assert half.returncode != 0
    assert "--int4-kernels runs its kernels on the CPU from a float32 model: add --cpu" in half.output
    float_weights = generate(multi30k_2k, checkpoint, "--int4-kernels", check=False)
    assert float_weights.returncode != 0 and "add --quant-bits 2, 3 or 4 (this checkpoint holds float weights)" in \
        float_weights.output
