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
TRAIN_SETTINGS = [
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "2e-3",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "10",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--max-tokens", "2000", "--seed", "1", "--cpu", "--num-workers", "0",
    "--no-progress-bar", "--log-format", "json", "--log-interval", "5", "--no-epoch-checkpoints",
]


def pytest_collection_modifyitems(items):
    """Run the quick unit tests first, so a broken core fails fast before the minutes of CLI runs."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


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
