"""scripts/sweep.py on real checkpoints with the real fairseq-generate: records, progress, resumption, failures."""
import json

import pytest

from clitools import run
from fairseq_ext.analysis.sweep_results import check_record, level_label

pytestmark = pytest.mark.e2e

# What sweep.py's --help promises for its grids, written out: the labels of --grid tiny, one config per method
# and one calibrated config; the labels of --grid speed, in its order.
TINY_GRID = ["dense", "50% pruned", "4-bit", "50% pruned + 4-bit (SparseGPT+GPTQ)"]
SPEED_GRID = ["dense", "25% heads removed", "50% heads removed", "25% FFN removed", "50% FFN removed",
              "25% heads + 50% FFN removed", "8-bit", "int8 kernels", "25% heads + 50% FFN removed + int8 kernels"]


def records_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def params_logged_by_fairseq_train(output):
    line = next(line for line in output.splitlines() if "num. shared model params:" in line)
    return int(line.split("num. shared model params:")[1].split("(")[0].replace(",", ""))


def test_every_model_is_measured_once_under_every_config_of_the_grid(compression_study):
    records = records_of(compression_study.out / "sweep.jsonl")
    for record in records:
        check_record(record, "sweep.jsonl")
    expected = {(name, label) for name in compression_study.train_output for label in TINY_GRID}
    assert sorted((r["model"], level_label(r)) for r in records) == sorted(expected)
    for record in records:
        assert record["params"] == params_logged_by_fairseq_train(compression_study.train_output[record["model"]])
        assert (record["metric"], record["higher_is_better"], record["subset"]) == ("bleu", True, "test")
        assert 0 <= record["value"] <= 100
        assert 0 < record["compressed_mb"] <= record["fp32_mb"]
        if record["method"] == "dense":
            assert record["compressed_mb"] == pytest.approx(record["fp32_mb"])
        if record["method"] == "quant":  # 4-bit codes plus per-channel scales: well under half of fp32
            assert record["compressed_mb"] < record["fp32_mb"] / 2
        if "sparsegpt" in level_label(record).lower():  # calibrated on the fixture's --calib-samples 16
            assert (record["prune_method"], record["quant_method"], record["calibration_samples"]) == \
                ("sparsegpt", "gptq", 16)
        else:
            assert "prune_method" not in record and "quant_method" not in record
            assert "calibration_samples" not in record


def test_each_config_keeps_its_translations_and_they_score_what_fairseq_scored(compression_study):
    """The hypotheses the significance tests read are fairseq-generate's own: sacrebleu on the kept files gives
    the BLEU fairseq-generate printed, for every config."""
    from sacrebleu.metrics import BLEU

    from fairseq_ext.analysis.significance import read_lines

    out = compression_study.out
    references = read_lines(out / "hyps" / "references.test.txt")
    assert len(references) == 1000  # every sentence of test_2016_flickr, in order
    for record in records_of(out / "sweep.jsonl"):
        assert record["references"] == "hyps/references.test.txt"
        hypotheses = read_lines(out / record["hypotheses"])
        assert record["examples"] == len(hypotheses) == 1000
        assert BLEU().corpus_score(hypotheses, [references]).score == pytest.approx(record["value"], abs=0.005)


def test_progress_names_model_config_and_eta(compression_study):
    progress = [line for line in compression_study.sweep_output.splitlines() if line.startswith("sweep.py: [")]
    total = len(TINY_GRID) * 2
    assert len(progress) == 2 * total  # a line as each config starts, one as it ends
    assert progress[0].startswith(f"sweep.py: [1/{total}] small dense")
    assert f"[{total}/{total}] large" in progress[-1] and "elapsed" in progress[-1] and "ETA 0m00s" in progress[-1]


@pytest.mark.slow
def test_speed_grid_measures_structured_pruning_and_int8_kernels_and_the_report_shows_them(compression_study,
                                                                                            tmp_path):
    """--grid speed on the 2-head, 128-neuron model: real --prune-heads/--prune-ffn/--int8-kernels runs, each
    with the memory of the weights as they run and fairseq-generate's decoding speed, then the report's section."""
    run_dir = tmp_path / "run"
    checkpoint = compression_study.out / "train" / "large" / "checkpoint_last.pt"
    out = run(["scripts/sweep.py", "--data", compression_study.data, "--task", "translation", "--grid", "speed",
               "--out", run_dir / "sweep.jsonl", "--checkpoint", f"large={checkpoint}",
               "--generate-args", "--beam 1 --max-len-a 0 --max-len-b 5"]).output
    records = {level_label(r): r for r in records_of(run_dir / "sweep.jsonl")}
    assert list(records) == SPEED_GRID, out
    dense = records["dense"]
    for label, record in records.items():
        check_record(record, label)
        assert record["tokens_per_s"] > 0 and record["latency_ms"] > 0 and 0 <= record["value"] <= 100
    # 25% of 2 heads rounds down to none removed: the model and its memory are the dense ones.
    assert records["25% heads removed"]["compressed_mb"] == dense["fp32_mb"]
    # One of two heads: q/k/v lose half their rows and out_proj half its columns, in all 3 attention modules.
    half_heads = records["50% heads removed"]
    assert half_heads["method"] == "structured" and half_heads["compressed_mb"] < dense["compressed_mb"]
    assert records["50% FFN removed"]["compressed_mb"] < records["25% FFN removed"]["compressed_mb"] < dense["compressed_mb"]
    # int8 Linears and the (tied) embedding table: 1 byte a weight plus fp32 scales, biases and LayerNorms.
    int8 = records["int8 kernels"]
    assert int8["method"] == "int8" and int8["compressed_mb"] < 0.5 * dense["compressed_mb"]
    both = records["25% heads + 50% FFN removed + int8 kernels"]
    assert both["method"] == "structured+int8" and both["compressed_mb"] < int8["compressed_mb"]

    report = run(["scripts/analyze.py", "report", "--run", run_dir]).output
    text = (run_dir / "report" / "report.md").read_text()
    assert "## Decoding speed" in text and (run_dir / "report" / "speed.png").stat().st_size > 0, report
    assert "### Structured pruning and int8 kernels" in text


def test_a_rerun_resumes_and_repeats_nothing(compression_study, multi30k_2k):
    results = compression_study.out / "sweep.jsonl"
    before = results.read_text()
    proc = run(["scripts/sweep.py", *compression_study.sweep_args])
    assert results.read_text() == before
    total = len(before.splitlines())
    assert f"resuming: {total} of {total} configs already in" in proc.output
    assert "sweep.py: [" not in proc.output


@pytest.mark.parametrize("problem", ["data", "checkpoint", "name", "subset", "spm", "out", "calib", "calib_out"])
def test_bad_input_fails_before_any_run_with_one_line_naming_the_option(problem, compression_study, tmp_path):
    checkpoint = compression_study.out / "train" / "small" / "checkpoint_last.pt"
    data = compression_study.data
    args = {"--data": [str(data)], "--checkpoint": [f"small={checkpoint}"], "--out": [str(tmp_path / "new.jsonl")],
            "--task": ["translation"]}
    expected = {
        "data": ("--data", str(tmp_path / "nowhere")),
        "checkpoint": ("--checkpoint", f"small={tmp_path / 'missing.pt'}"),
        "name": ("--checkpoint", str(checkpoint)),
        "subset": ("--subset", "nosuchsplit"),
        "spm": ("--spm", str(tmp_path / "missing.model")),
        "out": ("--out", str(compression_study.out / "sweep.jsonl")),
        "calib": ("--calib-samples", "0"),
        # Results calibrated on 16 samples: more configs calibrated on 8 would not be comparable.
        "calib_out": ("--calib-samples", "8"),
    }[problem]
    option, value = expected
    args[option] = [value]
    if problem == "out":  # existing results of another subset: mixing them would make the frontier meaningless
        args["--subset"] = ["valid"]
    if problem == "calib_out":
        args["--out"] = [str(compression_study.out / "sweep.jsonl")]
    argv = [item for option, values in args.items() for item in (option, *values)]
    proc = run(["scripts/sweep.py", *argv], check=False)
    assert proc.returncode == (2 if problem in ("name", "calib") else 1)  # 2: argparse's own checks
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and option in errors[0], errors
    assert not (tmp_path / "new.jsonl").exists()


def test_a_failed_run_stops_the_sweep_and_shows_why(compression_study, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    results = tmp_path / "sweep.jsonl"
    proc = run(["scripts/sweep.py", "--data", compression_study.data, "--checkpoint", f"broken={broken}",
                "--out", results, "--task", "translation", "--grid", "tiny"], check=False)
    assert proc.returncode == 1
    error = [line for line in proc.output.splitlines() if line.startswith("sweep.py: error:")]
    assert error == ["sweep.py: error: broken dense failed: fairseq-generate exited 1"], proc.output[-3000:]
    # The failing command and the end of its output (torch's own words on the file) are shown, not hidden.
    assert f"--path {broken}" in proc.output
    assert proc.output.split("output ends:\n")[1].strip()
    assert not results.exists() or not results.read_text().strip()
