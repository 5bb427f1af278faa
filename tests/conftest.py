"""Fixtures shared by the end-to-end tests: real Multi30k data, prepared once per session."""
import pytest

from clitools import DATA, run

TINY_TRANSFORMER = [
    "--arch", "transformer", "--share-all-embeddings",
    "--encoder-layers", "1", "--decoder-layers", "1",
    "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
    "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
]
# fairseq-train's batch prefetch runs in a daemon thread (--data-buffer-size, default 10); caught inside torch when
# the interpreter exits, it aborts the finished run (rc -6, "terminate called without an active exception") about
# once in ten on torch 2.13 / Python 3.11. Without the thread every run exits cleanly; the recipes pass it too.
CLEAN_EXIT = ["--data-buffer-size", "0"]
TRAIN_SETTINGS = [
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "2e-3",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "10",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--max-tokens", "2000", "--seed", "1", "--cpu", "--num-workers", "0",
    "--no-progress-bar", "--log-format", "json", "--log-interval", "5", "--no-epoch-checkpoints",
    *CLEAN_EXIT,
]


# Test files whose tests share a fixture that costs minutes: under pytest-xdist (make test runs two workers)
# they must run on one worker, or each worker would build the fixture again.
SHARED_FIXTURE_GROUPS = {"test_analysis_e2e.py": "compression_study", "test_sweep_e2e.py": "compression_study",
                         "test_int4_e2e.py": "tiny_mt_checkpoint", "test_int8_e2e.py": "tiny_mt_checkpoint"}
# Files whose tests share nothing costly: each test may go to any worker.
INDEPENDENT_TESTS = {"test_recipes.py", "test_lean_generation_e2e.py"}
# The groups that take minutes, longest first (about 170, 150, 125, 90 and 50 s on 2 cores): they start before the
# other CLI runs, so that the two workers finish together.
LONGEST_GROUPS = ["test_tasks_compression_e2e.py", "compression_study", "test_roberta_tiny", "test_multi30k_tiny",
                  "test_wmt14_tiny"]


def group_of(item):
    file = item.path.name
    return item.nodeid if file in INDEPENDENT_TESTS else SHARED_FIXTURE_GROUPS.get(file, file)


def start_rank(item):
    """Unit tests first, so a broken core fails fast, then the longest groups of CLI runs, then the other CLI runs."""
    if item.get_closest_marker("e2e") is None:
        return 0
    group = group_of(item)
    return 1 + next((i for i, name in enumerate(LONGEST_GROUPS) if name in group), len(LONGEST_GROUPS))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the xdist_group marks into the groups
def pytest_collection_modifyitems(items):
    """Order the tests (start_rank) and group them for `pytest -n 2 --dist loadgroup --no-loadscope-reorder`, so that
    module and session fixtures are built once and groups start in this order."""
    items.sort(key=start_rank)
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))


@pytest.fixture(scope="session")
def shared_data():
    if not (DATA / "multi30k" / "train.en.gz").is_file():
        pytest.fail(f"real test data not found at {DATA} (set FAIRSEQ_EXT_DATA to the shared/data folder)")
    return DATA


@pytest.fixture(scope="session")
def multi30k_2k(shared_data, tmp_path_factory):
    """A 2,000-pair slice of the real Multi30k En-Fr training set (full val/test), BPE 2k, binarized."""
    out = tmp_path_factory.mktemp("multi30k_2k")
    run(["scripts/prepare_multi30k.py", "--out", out, "--from", shared_data / "multi30k",
         "--train-size", "2000", "--vocab-size", "2000"])
    return out


@pytest.fixture(scope="session")
def tiny_mt_checkpoint(multi30k_2k, tmp_path_factory):
    """A tiny Transformer trained for 40 updates with fairseq-train --user-dir fairseq_ext; returns (dir, output)."""
    save_dir = tmp_path_factory.mktemp("tiny_mt")
    proc = run(["fairseq-train", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task", "translation",
                *TINY_TRANSFORMER, *TRAIN_SETTINGS, "--max-update", "40", "--save-dir", save_dir])
    return save_dir, proc.output


@pytest.fixture(scope="session")
def compression_study(multi30k_2k, tmp_path_factory):
    """A recipe's run folder in miniature, all from real runs: two sizes trained by fairseq-train --log-file into
    OUT/train/<name>/ (12 updates, validating every 4), meta.json for "large" only (the recipes write it; the
    analysis must do without), then scripts/sweep.py --grid tiny on both checkpoints into OUT/sweep.jsonl (and the
    translations into OUT/hyps/)."""
    import json
    import re
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from clitools import json_log_records

    out = tmp_path_factory.mktemp("study")
    archs = {"small": [{"64": "32", "128": "64"}.get(a, a) for a in TINY_TRANSFORMER], "large": TINY_TRANSFORMER}

    def train(name):
        folder = out / "train" / name
        folder.mkdir(parents=True)
        return run(["fairseq-train", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task", "translation",
                    *archs[name], *TRAIN_SETTINGS, "--log-interval", "2", "--validate-interval-updates", "4",
                    "--max-valid-steps", "2", "--max-update", "12", "--save-dir", folder,
                    "--log-file", folder / "train.log"]).output

    with ThreadPoolExecutor(len(archs)) as pool:  # tiny models leave a core idle: train both at once
        train_output = dict(zip(archs, pool.map(train, archs)))
    params = re.search(r"num\. shared model params: ([\d,]+)", train_output["large"]).group(1).replace(",", "")
    (out / "train" / "large" / "meta.json").write_text(json.dumps({
        "name": "large", "arch": "transformer", "params": int(params), "device": "cpu",
        "words_per_s": float(json_log_records(train_output["large"], "train_inner")[-1]["wps"])}))
    sweep_args = ["--data", multi30k_2k / "bin", "--task", "translation", "--grid", "tiny", "--out", out / "sweep.jsonl",
                  "--checkpoint", *(f"{name}={out / 'train' / name / 'checkpoint_last.pt'}" for name in archs),
                  # 12-update models write to the length limit: keep that short, the sweep runs 8 generations;
                  # the calibrated config calibrates on 16 training sentences.
                  "--generate-args", "--beam 1 --max-len-a 0 --max-len-b 5", "--calib-samples", "16"]
    sweep_output = run(["scripts/sweep.py", *sweep_args]).output
    return SimpleNamespace(out=out, data=multi30k_2k / "bin", train_output=train_output, sweep_args=sweep_args,
                           sweep_output=sweep_output)
