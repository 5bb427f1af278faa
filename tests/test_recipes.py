"""The shell recipes end to end in their --tiny modes, on the real data in ../shared/data, as a user runs them."""
import gzip
import io
import json
import tarfile

import pytest

from clitools import DATA, REPO, run

pytestmark = pytest.mark.e2e

RECIPES = ["multi30k_en_fr", "wmt14_en_fr", "roberta"]


def recipe(name, *args, check=True):
    return run(["bash", REPO / "recipes" / name / "run.sh", *args], check=check, timeout=900)


def recipe_on_cpu(name, *args):
    """A --tiny run as the tests expect it on any machine: on the CPU (a GPU would switch to fp16)."""
    return recipe(name, "--cpu", *args)


def sweep_records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_trained(run_dir, sizes):
    """Each size trained for the recipe's budget and described in meta.json, with a JSON train log."""
    for size in sizes:
        meta = json.loads((run_dir / "train" / size / "meta.json").read_text())
        assert meta["name"] == size and meta["params"] > 0 and meta["updates"] >= 1
        assert meta["device"].startswith("cpu")
        log = (run_dir / "train" / size / "train.log").read_text()
        assert '"num_updates"' in log or '"train_num_updates"' in log
        assert (run_dir / "train" / size / "checkpoint_last.pt").is_file()


@pytest.mark.slow
def test_multi30k_tiny_runs_the_study_and_resumes(tmp_path):
    out = tmp_path / "run"
    first = recipe_on_cpu("multi30k_en_fr", "--tiny", "--out", out).output
    check_trained(out, ["d2_h128", "d2_h256"])
    records = sweep_records(out / "sweep.jsonl")
    assert {r["model"] for r in records} == {"d2_h128", "d2_h256"}
    assert {r["method"] for r in records} == {"dense", "prune", "quant", "prune+quant"}
    assert all(r["metric"] == "bleu" and r["subset"] == "test" for r in records)
    # The calibrated config calibrated on the training set beside the sweep's 40 test sentences; every config's
    # translations are kept, reachable from the merged sweep.jsonl.
    assert [r["calibration_samples"] for r in records if "prune_method" in r] == [128, 128]
    assert all(len((out / r["hypotheses"]).read_text().splitlines()) == r["examples"] == 40 for r in records)
    # Each model's own score (the whole test set; --tiny: the sweep's 40 sentences): what the report checks.
    scores = sweep_records(out / "scores" / "sweep.jsonl")
    assert sorted((r["model"], r["method"]) for r in scores) == [("d2_h128", "dense"), ("d2_h256", "dense")]
    report = (out / "report" / "report.md").read_text()
    assert "uncompressed score on the test set, scored apart from the sweep (`scores/sweep.jsonl`)" in report
    assert "## Which model under a memory budget" in report and "cpu: " in report
    # The summary names the regime and each model's rate; 4-second models translate nothing, and it says so
    # instead of drawing a verdict from them.
    assert "train words/s" in first and "NOT LEARNED (left out of the verdicts): d2_h128, d2_h256" in first
    assert "No swept model learned (see above): no verdict." in report
    assert "[train 2/2] d2_h256" in first  # progress: which model, out of how many
    again = recipe_on_cpu("multi30k_en_fr", "--tiny", "--out", out).output
    assert again.count("finished before") == 2 and "prepare: " in again and "skipping" in again
    assert sweep_records(out / "sweep.jsonl") == records  # nothing evaluated twice


def wmt_archives(mirror, multi30k):
    """The seven archives of fairseq's prepare-wmt14en2fr.sh, with their internal layouts, filled with Multi30k."""
    def lines(split, lang, start, stop):
        with gzip.open(multi30k / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f][start:stop]

    def text(split, start, stop):
        return {lang: ("\n".join(lines(split, lang, start, stop)) + "\n").encode() for lang in ("en", "fr")}

    def sgml(segments, kind, lang):
        body = "".join(f'<seg id="{i}"> {s} </seg>\n' for i, s in enumerate(segments, 1))
        return (f'<{kind}set setid="newstest2014" srclang="any">\n<doc sysid="ref" docid="1012-bbc" genre="news" '
                f'origlang="en">\n<p>\n{body}</p>\n</doc>\n</{kind}set>\n').encode()

    train = [text("train", i * 400, (i + 1) * 400) for i in range(5)]
    test = {lang: lines("test_2016_flickr", lang, 0, 100) for lang in ("en", "fr")}
    test["en"][0] += " &amp; co"  # entities stay as sacrebleu reads them
    contents = {
        "training-parallel-europarl-v7.tgz": {f"training/europarl-v7.fr-en.{k}": v for k, v in train[0].items()},
        "training-parallel-commoncrawl.tgz": {f"commoncrawl.fr-en.{k}": v for k, v in train[1].items()},
        "training-parallel-un.tgz": {f"un/undoc.2000.fr-en.{k}": v for k, v in train[2].items()},
        "training-parallel-nc-v9.tgz": {f"training/news-commentary-v9.fr-en.{k}": v for k, v in train[3].items()},
        "training-giga-fren.tar": {f"giga-fren.release2.fixed.{k}.gz": gzip.compress(v) for k, v in train[4].items()},
        "dev.tgz": {**{f"dev/newstest2012.{k}": v for k, v in text("val", 0, 60).items()},
                    **{f"dev/newstest2013.{k}": v for k, v in text("val", 60, 120).items()}},
        "test-full.tgz": {"test-full/newstest2014-fren-src.en.sgm": sgml(test["en"], "src", "en"),
                          "test-full/newstest2014-fren-ref.fr.sgm": sgml(test["fr"], "ref", "fr")},
    }
    mirror.mkdir()
    for archive, members in contents.items():
        with tarfile.open(mirror / archive, "w:gz" if archive.endswith(".tgz") else "w") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return test


@pytest.mark.slow
def test_wmt14_tiny_runs_end_to_end_on_a_mirror_of_the_archives(tmp_path):
    test = wmt_archives(tmp_path / "mirror", DATA / "multi30k")
    out = tmp_path / "run"
    output = recipe_on_cpu("wmt14_en_fr", "--tiny", "--from", tmp_path / "mirror", "--out", out).output
    data = out / "data"
    # As sacrebleu reads newstest2014: the text between the tags, whitespace collapsed.
    assert (data / "text" / "test.fr").read_text().splitlines() == [" ".join(s.split()) for s in test["fr"]]
    assert (data / "text" / "test.en").read_text().splitlines()[0].endswith("&amp; co")
    assert len((data / "text" / "train.en").read_text().splitlines()) == 2000
    assert len((data / "text" / "valid.en").read_text().splitlines()) == 120
    assert (data / "bin" / "dict.en.txt").read_text() == (data / "bin" / "dict.fr.txt").read_text()
    check_trained(out, ["d2_h256"])
    bleu = (out / "eval" / "d2_h256" / "bleu.txt").read_text()
    assert bleu.startswith("BLEU|nrefs:1|") and "version:" in bleu  # sacrebleu's signature, printed
    assert "newstest2014 detokenized: BLEU|nrefs:1" in output
    assert len((out / "eval" / "d2_h256" / "hyp.txt").read_text().splitlines()) == 100
    assert {r["model"] for r in sweep_records(out / "sweep.jsonl")} == {"d2_h256"}
    assert (out / "report" / "report.md").is_file()


@pytest.mark.slow
def test_roberta_tiny_pretrains_finetunes_and_sweeps(tmp_path):
    out = tmp_path / "run"
    output = recipe_on_cpu("roberta", "--tiny", "--out", out).output
    assert "SST-2: 256 training and 256 dev examples, 2 classes" in output  # the tiny mode's slice of SST-2
    # Task-adaptive pretraining: the first 300 IMDB training reviews in sentences (every 50th review held out whole:
    # 3,390 training and 40 validation sentences), then SST-2's 256 training sentences without labels, their 251
    # training lines 8 times (--task-text), the 5 held out once.
    assert "SST-2: 256 training examples' sentences, without labels" in output
    assert "prepare: 5,398 training and 45 validation lines" in output
    check_trained(out, ["d3_h256", "d6_h256"])
    pretrained = {size: json.loads((out / "train" / size / "meta.json").read_text()) for size in ("d3_h256", "d6_h256")}
    # Masked tokens predicted right, the loss on the masked text tokens, and the text's unigram entropy (the 1k BPE).
    assert all(0 <= meta["valid_accuracy"] <= 100 and 0 <= meta["valid_text_accuracy"] <= 100
               and 0 < meta["valid_text_loss"] and 0 < meta["unigram_entropy"] <= 10 for meta in pretrained.values())
    for size in ("d3_h256", "d6_h256"):
        meta = json.loads((out / "SST-2" / "finetune" / size / "meta.json").read_text())
        assert meta["updates"] == 4 and 0 <= meta["valid_accuracy"] <= 100
    records = sweep_records(out / "SST-2" / "sweep.jsonl")
    assert {r["model"] for r in records} == {"d3_h256", "d6_h256"}
    assert all(r["metric"] == "accuracy" and r["subset"] == "valid" for r in records)
    # fairseq-validate gives no per-example predictions: the accuracy test (unpaired) counts the dev examples.
    assert all(r["examples"] == 256 for r in records) and sum("quant_method" in r for r in records) == 2
    report = (out / "SST-2" / "report" / "report.md").read_text()
    assert "## Did every model learn?" in report
    # The best pretrained size (lowest masked-LM validation loss) with its second seed, and the control: that size
    # from random weights with both seeds; the report and the summary give their means and spreads.
    best = min(pretrained, key=lambda size: pretrained[size]["valid_loss"])
    for folder, seed in [("finetune", 1), ("finetune-seed2", 2), ("scratch", 1), ("scratch-seed2", 2)]:
        run_dir = out / "SST-2" / folder / best
        meta = json.loads((run_dir / "meta.json").read_text())
        assert meta["updates"] == 4 and meta["arch"] == f"roberta_{best}"
        command = (run_dir / "stdout.log").read_text()
        assert f"--seed {seed} " in command and ("--finetune-from-model" in command) == folder.startswith("finetune")
    # Every size gets every seed; only the best size gets a control.
    other = "d6_h256" if best == "d3_h256" else "d3_h256"
    assert (out / "SST-2" / "finetune-seed2" / other / "meta.json").is_file()
    assert not (out / "SST-2" / "scratch" / other).exists()
    assert f"| {other} | " in report.split("## What pretraining added")[1].split("## ")[0]
    (control,) = json.loads((out / "SST-2" / "report" / "control.json").read_text())
    assert control["model"] == best and len(control["pretrained"]) == len(control["scratch"]) == 2
    assert "## What pretraining added" in report and f"| {best} | " in report and "(2 seeds: " in report
    assert f"Best pretraining size for this budget: **{best}**" in report and "masked text tokens: " in report
    assert "unigram entropy of the pretraining text: " in output
    assert f"control: {best}: pretraining added " in output and " points of dev accuracy on the mean (" in output


@pytest.mark.parametrize("name", RECIPES)
def test_help(name):
    output = recipe(name, "--help").output
    assert output.startswith(f"usage: recipes/{name}/run.sh") and "--out DIR" in output


@pytest.mark.parametrize("name, args, expected", [
    ("multi30k_en_fr", ["--from", "/nonexistent"], "--from /nonexistent: no such folder"),
    ("multi30k_en_fr", ["--archs", "d2_h999"], "--archs: no grid arch transformer_wmt_en_fr_d2_h999 (sizes: d2_h128"),
    ("multi30k_en_fr", ["--budget"], "--budget needs a value"),
    ("multi30k_en_fr", ["--budget", "--tiny"], "--budget needs a value"),
    ("wmt14_en_fr", ["--from", "/nonexistent"], "--from /nonexistent: no such folder"),
    ("wmt14_en_fr", ["--launcher", "mpi"], "--launcher mpi: expected local, torchrun or slurm"),
    ("roberta", ["--glue-tasks", "MNLI"], "--glue-tasks needs --glue-dir"),
    ("roberta", ["--frobnicate"], "unknown option --frobnicate"),
    ("roberta", ["--task-text", "x"], "--task-text x: expected a whole number >= 0"),
    ("roberta", ["--seeds", "0"], "--seeds 0: expected a whole number > 0"),
])
def test_bad_input_fails_early_with_one_line(name, args, expected, tmp_path):
    proc = recipe(name, "--out", tmp_path / "out", *args, check=False)
    lines = proc.output.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith(f"{name}: error: {expected}"), proc.output
    assert not (tmp_path / "out").exists()  # nothing made before the check


def test_missing_wmt_archives_fail_with_one_line_naming_them(tmp_path):
    (tmp_path / "mirror").mkdir()
    proc = recipe("wmt14_en_fr", "--tiny", "--from", tmp_path / "mirror", "--out", tmp_path / "out", check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.output.splitlines() if "error" in line]
    assert len(errors) == 1 and "training-parallel-europarl-v7.tgz" in errors[0] and "test-full.tgz" in errors[0]


def test_missing_tools_fail_with_one_line(tmp_path):
    proc = run(["bash", REPO / "recipes" / "multi30k_en_fr" / "run.sh", "--tiny", "--out", tmp_path / "out"],
               check=False, env={"PATH": "/usr/bin:/bin", "FAIRSEQ_EXT_PYTHON": str(tmp_path / "no" / "python")})
    assert proc.returncode != 0
    assert proc.output.strip().splitlines() == [
        f"multi30k_en_fr: error: no python at {tmp_path}/no/python: run `make setup` first (or set FAIRSEQ_EXT_PYTHON)"]


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "settings.txt").write_text("mode=tiny\narchs=d2_h256\n")
    proc = recipe("multi30k_en_fr", "--tiny", "--cpu", "--out", out, check=False)
    lines = proc.output.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.output
    assert "holds a run made with other settings" in lines[0] and "use another --out" in lines[0]
