"""fairseq-generate with --int8-kernels and --prune-heads/--prune-ffn on a real (tiny, trained) checkpoint: the
compressed model decodes the Multi30k test set and gets a BLEU score; bad flags stop it at start-up."""
import json
import re
import subprocess

import pytest

from clitools import BIN, REPO, clean_env, run

pytestmark = pytest.mark.e2e

# Every 4th batch of 40 test sentences (fairseq-generate shards batches by world size and rank; no process group).
DECODE = ["--task", "compressed_translation", "--gen-subset", "test", "--beam", "2", "--batch-size", "40",
          "--distributed-world-size", "4", "--distributed-rank", "0", "--max-len-a", "1.2", "--max-len-b", "10",
          "--cpu", "--scoring", "sacrebleu", "--post-process", "sentencepiece"]


def generate(multi30k_2k, checkpoint, *flags, check=True):
    return run(["fairseq-generate", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--path",
                checkpoint / "checkpoint_last.pt", *DECODE, *flags], check=check).output


def compressed_line(output):
    match = re.search(r"compressed (\{.*\})", output)
    assert match, output[-3000:]
    return json.loads(match.group(1))


def test_generate_with_structured_pruning_and_int8_kernels(multi30k_2k, tiny_mt_checkpoint):
    """All the new flags at once, after --quant-bits 8 (interactive below runs --int8-kernels without it)."""
    checkpoint, _ = tiny_mt_checkpoint
    output = generate(multi30k_2k, checkpoint, "--prune-heads", "0.5", "--prune-ffn", "0.5", "--quant-bits", "8",
                      "--int8-kernels")
    figures = compressed_line(output)
    assert figures["bits"] == 8 and figures["heads_kept"] == "3/6" and figures["ffn_kept"] == "128/256"
    assert figures["params_after_structured"] < figures["params"]
    assert figures["int8_linears"] == (4 + 2) + (4 + 4 + 2) + 1  # encoder, decoder layer; output projection
    assert figures["int8_embeddings"] == 2  # the encoder's and the decoder's names for the one shared table
    # Every sentence of the shard (7 of the 25 batches of 40) decoded to a hypothesis, and scored.
    hypotheses = [line for line in output.splitlines() if line.startswith("H-")]
    assert len(hypotheses) == 280 and "Translated 280 sentences" in output
    assert re.search(r"Generate test with beam=2: BLEU = [\d.]+", output)


def test_bad_speed_flags_stop_generate_with_the_flag_named(multi30k_2k, tiny_mt_checkpoint):
    checkpoint, _ = tiny_mt_checkpoint
    proc = run(["fairseq-generate", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--path",
                checkpoint / "checkpoint_last.pt", *DECODE, "--prune-heads", "1", "--int8-kernels", "--fp16"],
               check=False)
    assert proc.returncode != 0
    assert "--prune-heads must be in [0, 1)" in proc.output


def test_interactive_with_int8_kernels(multi30k_2k, tiny_mt_checkpoint):
    checkpoint, _ = tiny_mt_checkpoint
    proc = subprocess.run(
        [str(BIN / "fairseq-interactive"), str(multi30k_2k / "bin"), "--user-dir", "fairseq_ext", "--task",
         "compressed_translation", "--path", str(checkpoint / "checkpoint_last.pt"), "--cpu", "--beam", "2",
         "--int8-kernels", "--prune-ffn", "0.25", "--max-len-b", "10", "--bpe", "sentencepiece",
         "--sentencepiece-model", str(multi30k_2k / "spm.model")],
        input="A man is riding a bike.\nTwo dogs play in the snow.\n", capture_output=True, text=True, cwd=REPO,
        env=clean_env(), timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert compressed_line(output)["int8_linears"] == 17
    assert sum(line.startswith(("D-0\t", "D-1\t")) for line in output.splitlines()) == 2
