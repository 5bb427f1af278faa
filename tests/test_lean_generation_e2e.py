"""The lean decoder against fairseq's own SequenceGenerator: fairseq-generate and fairseq-interactive on a real
Multi30k checkpoint, the same flags with and without --stock-generator, hypothesis for hypothesis."""
import subprocess

import pytest

from clitools import BIN, REPO, clean_env, run

pytestmark = pytest.mark.e2e

LEAN_ON = "generator: lean beam-aware decoder"
STOCK_ON = "generator: fairseq's SequenceGenerator (--stock-generator)"


def hypotheses(output):
    """{sentence id: [(tokens, score, [positional scores]) in fairseq's order]} from fairseq-generate/-interactive."""
    found, positional = {}, {}
    for line in output.splitlines():
        if line.startswith("H-"):
            sentence, score, tokens = line[2:].split("\t")
            found.setdefault(int(sentence), []).append([tokens, float(score)])
        elif line.startswith("P-"):
            sentence, scores = line[2:].split("\t")
            positional.setdefault(int(sentence), []).append([float(s) for s in scores.split()])
    for sentence, hypos in found.items():
        for hypo, scores in zip(hypos, positional[sentence], strict=True):
            hypo.append(scores)
    return found


def assert_same_hypotheses(stock_output, lean_output, expected_sentences, nbest=1, tolerance=1.01e-4):
    stock, lean = hypotheses(stock_output), hypotheses(lean_output)
    assert len(stock) == expected_sentences and sorted(stock) == sorted(lean)
    for sentence, stock_hypos in stock.items():
        assert len(stock_hypos) == nbest == len(lean[sentence])
        for (tokens, score, positional), (lean_tokens, lean_score, lean_positional) in zip(stock_hypos, lean[sentence]):
            assert lean_tokens == tokens, f"sentence {sentence}"
            # Printed with 4 decimals; the attention products group rows differently (beams together), so the
            # last bit of a float32 can differ and move a rounding.
            assert lean_score == pytest.approx(score, abs=tolerance)
            assert lean_positional == pytest.approx(positional, abs=tolerance)


def generate(data, checkpoint, *args, stock=False):
    proc = run(["fairseq-generate", data, "--user-dir", "fairseq_ext", "--task", "compressed_translation",
                "--path", checkpoint, "--cpu", "--gen-subset", "test", "--batch-size", "48",
                "--required-batch-size-multiple", "1", "--num-workers", "0", *args,
                *(["--stock-generator"] if stock else [])])
    assert (STOCK_ON if stock else LEAN_ON) in proc.output
    return proc.output


# Each case decodes all 1,000 test sentences; batches of 48 lose their finished sentences at different steps.
CASES = {
    "greedy": (["--beam", "1"], 1),
    "beam5_nbest3_lenpen": (["--beam", "5", "--nbest", "3", "--lenpen", "1.5"], 3),
    "prefix_unkpen_minlen": (["--beam", "4", "--prefix-size", "2", "--unkpen", "2", "--min-len", "4"], 1),
    # past 16 positions the self-attention buffers grow; the length cap finishes every sentence at once
    "long_fixed_length": (["--beam", "4", "--min-len", "24", "--max-len-a", "0", "--max-len-b", "24"], 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lean_decoder_gives_the_stock_hypotheses_and_scores(multi30k_2k, tiny_mt_checkpoint, case):
    args, nbest = CASES[case]
    checkpoint = tiny_mt_checkpoint[0] / "checkpoint_last.pt"
    stock = generate(multi30k_2k / "bin", checkpoint, *args, stock=True)
    lean = generate(multi30k_2k / "bin", checkpoint, *args)
    assert_same_hypotheses(stock, lean, 1000, nbest)


def test_lean_decoder_on_a_compressed_model_and_a_packed_file(multi30k_2k, tiny_mt_checkpoint, tmp_path):
    checkpoint = tiny_mt_checkpoint[0] / "checkpoint_last.pt"
    flags = ["--beam", "4", "--prune-sparsity", "0.5", "--quant-bits", "4", "--prune-heads", "0.5",
             "--prune-ffn", "0.25"]
    # int8 kernels quantize each activation with its tensor's range: a last-bit difference upstream can move a
    # value to the next int8 step, so the token scores agree to about 1e-2 (the hypotheses stay the same).
    flags.append("--int8-kernels")
    assert_same_hypotheses(generate(multi30k_2k / "bin", checkpoint, *flags, stock=True),
                           generate(multi30k_2k / "bin", checkpoint, *flags), 1000, tolerance=5e-2)
    packed = tmp_path / "model.fxc"
    run(["scripts/pack_checkpoint.py", checkpoint, "--out", packed, "--prune-sparsity", "0.6", "--quant-bits", "4"])
    assert_same_hypotheses(generate(multi30k_2k / "bin", packed, "--beam", "4", stock=True),
                           generate(multi30k_2k / "bin", packed, "--beam", "4"), 1000)


def test_lean_decoder_in_fairseq_interactive(multi30k_2k, tiny_mt_checkpoint):
    def interactive(*flags):
        proc = subprocess.run(
            [str(BIN / "fairseq-interactive"), str(multi30k_2k / "bin"), "--user-dir", "fairseq_ext", "--task",
             "compressed_translation", "--path", str(tiny_mt_checkpoint[0] / "checkpoint_last.pt"), "--cpu",
             "--beam", "4", "--nbest", "2", "--buffer-size", "3", "--batch-size", "3", "--bpe", "sentencepiece",
             "--sentencepiece-model", str(multi30k_2k / "spm.model"), *flags],
            input="A man is riding a bike.\nTwo dogs play in the snow.\nA girl in a red dress.\nPeople.\n",
            capture_output=True, text=True, cwd=REPO, env=clean_env(), timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    stock, lean = interactive("--stock-generator"), interactive()
    assert STOCK_ON in stock and LEAN_ON in lean
    assert_same_hypotheses(stock, lean, 4, nbest=2)


def test_what_the_lean_decoder_does_not_support_falls_back_with_the_reason(multi30k_2k, tiny_mt_checkpoint):
    checkpoint = tiny_mt_checkpoint[0] / "checkpoint_last.pt"
    aligned = run(["fairseq-generate", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task",
                   "compressed_translation", "--path", checkpoint, "--cpu", "--gen-subset", "valid", "--beam", "2",
                   "--max-len-b", "5", "--print-alignment"]).output
    assert ("generator: fairseq's SequenceGeneratorWithAlignment, because the lean decoder does not support "
            "--print-alignment") in aligned
    assert any(line.startswith("A-") for line in aligned.splitlines())
    ensemble = run(["fairseq-generate", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task",
                    "compressed_translation", "--path", f"{checkpoint}:{checkpoint}", "--cpu", "--gen-subset",
                    "valid", "--beam", "2", "--max-len-b", "5"]).output
    assert ("generator: fairseq's SequenceGenerator, because the lean decoder does not support an ensemble of "
            "2 models") in ensemble
