"""scripts/analyze.py, run as a user runs it, on logs and sweep results recorded from real fairseq runs (the
compression_study fixture)."""
import csv
import json
import subprocess
import sys

import pytest

from clitools import REPO, json_log_records, run
from fairseq_ext.analysis.tables import number_text

pytestmark = pytest.mark.e2e

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sweep_records(study):
    return [json.loads(line) for line in (study.out / "sweep.jsonl").read_text().splitlines()]


def logs(study):
    return [str(study.out / "train" / name / "train.log") for name in study.train_output]


def analyze(*argv, check=True):
    """scripts/analyze.py ARGV; the finished process (returncode, stdout, stderr)."""
    return run(["scripts/analyze.py", *argv], check=check)


def assert_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = matplotlib.image.imread(path).shape
    assert width >= 600 and height >= 400


@pytest.fixture(scope="module")
def report(compression_study):
    # 12-update models translate nothing: --min-score 0 lets them into the verdicts, whose machinery is tested here.
    run(["scripts/analyze.py", "report", "--run", compression_study.out, "--min-score", "0"])
    return compression_study.out / "report"


def test_curves_hold_exactly_the_validations_fairseq_logged(compression_study, tmp_path):
    analyze("convergence", "--logs", *logs(compression_study), "--out", tmp_path)
    points = read_csv(tmp_path / "convergence_points.csv")
    for name, output in compression_study.train_output.items():
        # The console output, read by the tests' own parser: the same records as the --log-file.
        wall = {r["num_updates"]: float(r["wall"]) for r in json_log_records(output, "train_inner")}
        expected = [(int(v["valid_num_updates"]), wall[v["valid_num_updates"]], float(v["valid_loss"]))
                    for v in json_log_records(output, "valid")]
        assert len(expected) >= 3
        assert [(int(p["updates"]), float(p["wall_s"]), float(p["value"]))
                for p in points if p["model"] == name] == expected
    for x in ("wall", "updates"):
        assert_png(tmp_path / f"convergence_valid_loss_vs_{x}.png")


def test_time_to_target_is_the_first_validation_at_or_below_it(compression_study, tmp_path):
    valid = {name: json_log_records(output, "valid") for name, output in compression_study.train_output.items()}
    # The best loss of all: reached by the best run, not necessarily by the others.
    target = min(float(v["valid_loss"]) for records in valid.values() for v in records)
    analyze("convergence", "--logs", *logs(compression_study), "--target", str(target), "--out", tmp_path)
    table = {row["model"]: row for row in read_csv(tmp_path / "time_to_target.csv")}
    for name, records in valid.items():
        hit = next((v for v in records if float(v["valid_loss"]) <= target), None)
        assert table[name]["updates"] == (hit["valid_num_updates"] if hit else "not reached")


def test_frontier_flags_exactly_the_non_dominated_configs(compression_study, tmp_path):
    analyze("frontier", "--sweep", compression_study.out / "sweep.jsonl", "--out", tmp_path)
    records = sweep_records(compression_study)

    def calibrated(record):
        return "prune_method" in record or "quant_method" in record

    views = {"all": lambda r: True, "pruning": lambda r: r["method"] in ("dense", "prune"),
             "quantization": lambda r: r["method"] in ("dense", "quant"),
             # The compressor families: dense belongs to both.
             "paper": lambda r: r["method"] == "dense" or not calibrated(r),
             "calibrated": lambda r: r["method"] == "dense" or calibrated(r)}
    assert any(map(calibrated, records))
    for view, belongs in views.items():
        chosen = [r for r in records if belongs(r)]
        rows = read_csv(tmp_path / f"frontier_{view}.csv")
        assert len(rows) == len(chosen)
        for row in rows:
            mb, value = float(row["compressed_mb"]), float(row["value"])
            beaten = any(o["compressed_mb"] <= mb and o["value"] >= value and
                         (o["compressed_mb"] < mb or o["value"] > value) for o in chosen)
            assert row["on_frontier"] == str(not beaten), row
        assert_png(tmp_path / f"frontier_{view}.png")


def test_select_picks_the_best_config_that_fits_each_budget(compression_study):
    records = sweep_records(compression_study)
    sweep = compression_study.out / "sweep.jsonl"
    for budget in sorted({r["compressed_mb"] for r in records}):
        line = analyze("select", "--sweep", sweep, "--max-mb", repr(budget)).stdout.strip()
        fitting = [r for r in records if r["compressed_mb"] <= budget]
        best = min(fitting, key=lambda r: (-r["value"], r["compressed_mb"], r["params"], r["model"]))
        assert line.startswith(f"under {number_text(budget)} MB: best is {best['model']} ("), line
        if not any(r["method"] == "dense" for r in fitting):
            assert "no uncompressed (dense 32-bit) model fits" in line
    smallest = min(r["compressed_mb"] for r in records)
    proc = analyze("select", "--sweep", sweep, "--max-mb", repr(smallest / 2), check=False)
    assert proc.returncode == 1 and "nothing fits" in proc.stdout


def test_a_latency_budget_uses_the_decoding_speed_the_sweep_measured(compression_study):
    records = sweep_records(compression_study)
    sweep = compression_study.out / "sweep.jsonl"
    assert all(r["latency_ms"] > 0 for r in records)
    max_mb = max(r["compressed_mb"] for r in records)
    for max_ms in sorted({r["latency_ms"] for r in records}):
        line = analyze("select", "--sweep", sweep, "--max-mb", repr(max_mb), "--max-ms", repr(max_ms)).stdout.strip()
        fast = [r for r in records if r["latency_ms"] <= max_ms]
        best = min(fast, key=lambda r: (-r["value"], r["compressed_mb"], r["params"], r["model"]))
        assert line.startswith(f"under {number_text(max_mb)} MB and {number_text(max_ms)} ms"), line
        assert f"best is {best['model']} (" in line, line
    fastest = min(r["latency_ms"] for r in records)
    proc = analyze("select", "--sweep", sweep, "--max-mb", repr(max_mb), "--max-ms", repr(fastest / 2), check=False)
    assert proc.returncode == 1 and "nothing fits" in proc.stdout


def test_report_holds_tables_plots_and_the_budget_answers(report, compression_study):
    text = (report / "report.md").read_text()
    for png in report.glob("*.png"):
        assert_png(png)
        assert f"]({png.name})" in text  # embedded
    # 2 convergence + 5 frontier views (all, each compressor family, pruning, quantization) + metric vs decoding
    # speed (every translation record has its tokens/s) + the frontier at run time (every record has runtime_mb)
    assert len(list(report.glob("*.png"))) == 9
    assert "## Decoding speed" in text and "![speed](speed.png)" in text
    # At run time: this sweep simulated every config (float32 weights on the grid), so every compressed point of
    # the accounted frontier takes more than its bytes while decoding, and the report says so, point by point.
    assert "## Memory at run time" in text and "No config of this sweep ran on kernels" in text
    runtime = list(csv.DictReader((report / "frontier_runtime.csv").open()))
    compressed = [row for row in runtime if row["compression"] != "dense" and "accounted" in row["frontiers"]]
    assert compressed and all(float(row["runtime_mb"]) > 1.15 * float(row["accounted_mb"]) for row in compressed)
    assert all(f"{row['model']} {row['compression']} (" in text for row in compressed)
    for table in ("time_to_target.csv", "time_to_target.json", "convergence_points.csv", "frontier_all.csv",
                  "frontier.json", "budgets.json"):
        assert (report / table).is_file(), table
    # The regime: meta.json's device and words/s where the recipe wrote one, the log's mean wps where not.
    assert "Device: cpu." in text
    assert "| large |" in text and "meta.json" in text and "train log (median train_inner wps)" in text
    budgets = json.loads((report / "budgets.json").read_text())
    sizes = json.loads((report / "sizes.json").read_text())
    for row, duel in zip(budgets, sizes["rows"], strict=True):
        # The best config's size against the best config of another size under the same budget.
        assert (row["budget_mb"], row["model"]) == (duel["budget_mb"], duel["model"])
        assert row["kind"].startswith({None: "the only size that fits", True: "larger model",
                                       False: "smaller model"}[duel["larger_wins"]])
        assert f"| {row['kind']} |" in text
    assert sizes["verdict"] in text and len(sizes["lines"]) == len(budgets)
    assert "Significance: sacrebleu's paired bootstrap resampling (1,000 resamples)" in text
    # Per compressor family: each budget's winner against the best other size, tested, and the verdict.
    families = json.loads((report / "families.json").read_text())
    assert {row["family"] for row in families["rows"]} == {"paper", "calibrated"}
    assert "## Which model under a memory budget, per compressor family" in text and families["verdict"] in text
    for row in families["rows"]:
        if row["other_model"] != "none fits":  # both sizes' translations were kept: every lead is tested
            assert 0 < row["p_value"] <= 1 and row["difference"] != "not tested"


def test_report_without_matplotlib_writes_the_tables_and_says_how_to_get_plots(compression_study, tmp_path):
    argv = ["analyze.py", "report", "--run", str(compression_study.out), "--out", str(tmp_path)]
    code = ("import runpy, sys\n"
            "sys.modules['matplotlib'] = None\n"  # as if not installed: its import fails
            f"sys.argv = {argv!r}\n"
            "runpy.run_path('scripts/analyze.py', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "pip install matplotlib" in proc.stderr
    assert not list(tmp_path.glob("*.png"))
    assert (tmp_path / "frontier_all.csv").is_file() and (tmp_path / "time_to_target.md").is_file()
    assert "pip install matplotlib" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("argv, option", [
    (["convergence", "--logs", "nowhere/train.log", "--out", "x"], "nowhere/train.log"),
    (["convergence", "--metric", "valid_bleu", "--out", "x"], "--metric valid_bleu"),
    (["select", "--max-mb", "0"], "--max-mb"),
    (["select", "--max-mb", "5", "--max-ms", "0"], "--max-ms"),
    (["report", "--run", "EMPTY"], "--run"),
])
def test_bad_input_is_one_clear_line_naming_the_option(argv, option, compression_study, tmp_path):
    sweep = ["--sweep", str(compression_study.out / "sweep.jsonl")] if argv[0] == "select" else []
    if argv[0] == "convergence" and "--logs" not in argv:
        argv = [argv[0], "--logs", *logs(compression_study), *argv[1:]]
    argv = [str(tmp_path) if a == "EMPTY" else str(tmp_path / a) if a == "x" else a for a in argv]
    proc = analyze(*argv, *sweep, check=False)
    assert proc.returncode == 2  # argparse's own checks (--max-mb) and the analysis's alike
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and option in errors[0], errors


def test_by_default_models_that_translate_nothing_take_no_part_in_the_verdicts(compression_study, tmp_path):
    run(["scripts/analyze.py", "report", "--run", compression_study.out, "--out", tmp_path])
    text = (tmp_path / "report.md").read_text()
    dense = {r["model"]: r["value"] for r in sweep_records(compression_study) if r["method"] == "dense"}
    assert all(bleu < 10 for bleu in dense.values())  # 12 updates: the premise of this test
    for name, bleu in dense.items():
        assert f"bleu {number_text(bleu)} < 10: has not learned" in text
    assert "Left out of the verdicts below: small, large." in text
    assert "No swept model learned (see above): no verdict." in text
    assert not (tmp_path / "budgets.json").exists()
    assert json.loads((tmp_path / "best_size.json").read_text())["not_learned"] == ["small", "large"]
