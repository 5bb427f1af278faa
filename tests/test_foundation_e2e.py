"""The foundation, as a new user meets it: prepare real Multi30k, train, generate, validate, resume."""
import pytest

from clitools import REPO, bleu, clean_env, json_log_records, run
from conftest import TINY_TRANSFORMER, TRAIN_SETTINGS

pytestmark = pytest.mark.e2e


def test_prepare_writes_the_requested_slice_and_a_joined_dictionary(multi30k_2k):
    assert len((multi30k_2k / "text" / "train.en").read_text().splitlines()) == 2000
    assert len((multi30k_2k / "text" / "test.fr").read_text().splitlines()) == 1000
    bin_dir = multi30k_2k / "bin"
    assert (bin_dir / "dict.en.txt").read_text() == (bin_dir / "dict.fr.txt").read_text()
    assert (bin_dir / "train.en-fr.fr.bin").stat().st_size > 0


@pytest.mark.parametrize("problem", ["missing folder", "missing files", "unreachable download"])
def test_prepare_fails_with_one_clear_line(problem, tmp_path):
    args = ["scripts/prepare_multi30k.py", "--out", tmp_path / "out"]
    if problem == "missing folder":
        args += ["--from", tmp_path / "nowhere"]
        expected = ["--from", str(tmp_path / "nowhere")]
    elif problem == "missing files":
        (tmp_path / "empty").mkdir()
        args += ["--from", tmp_path / "empty"]
        expected = ["--from", "train.en.gz"]
    else:
        args += ["--mirror", "http://127.0.0.1:9/multi30k"]  # nothing listens on the discard port
        expected = ["http://127.0.0.1:9/multi30k/train.en.gz", "--from"]
    proc = run(args, check=False)
    assert proc.returncode != 0
    error_lines = [line for line in proc.output.splitlines() if "error" in line]
    assert len(error_lines) == 1, proc.output
    assert all(text in error_lines[0] for text in expected), error_lines[0]
    assert "Traceback" not in proc.output


def test_train_logs_a_falling_loss(tiny_mt_checkpoint):
    save_dir, output = tiny_mt_checkpoint
    inner = json_log_records(output, "train_inner")
    assert [r["num_updates"] for r in inner] == ["5", "10", "15", "20", "25", "30", "35", "40"]
    assert float(inner[-1]["loss"]) < float(inner[0]["loss"]) - 1.0
    assert json_log_records(output, "valid")[-1]["valid_num_updates"] == "40"
    assert (save_dir / "checkpoint_last.pt").is_file()


def test_generate_scores_sacrebleu_on_the_test_set(multi30k_2k, tiny_mt_checkpoint):
    save_dir, _ = tiny_mt_checkpoint
    proc = run(["fairseq-generate", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task", "translation",
                "--path", save_dir / "checkpoint_last.pt", "--gen-subset", "test", "--beam", "2",
                "--max-tokens", "8000", "--max-len-a", "1.2", "--max-len-b", "10", "--cpu",
                "--scoring", "sacrebleu", "--post-process", "sentencepiece"])
    assert 0.0 <= bleu(proc.output) <= 100.0
    hypotheses = [line for line in proc.output.splitlines() if line.startswith("D-")]
    assert len(hypotheses) == 1000
    assert "▁" not in "".join(hypotheses)  # sentencepiece was undone before scoring


def test_validate_reports_a_loss(multi30k_2k, tiny_mt_checkpoint):
    save_dir, output = tiny_mt_checkpoint
    proc = run(["fairseq-validate", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task", "translation", "--cpu",
                "--path", save_dir / "checkpoint_last.pt", "--valid-subset", "valid", "--max-tokens", "8000"])
    lines = [line for line in proc.output.splitlines() if "valid on 'valid' subset" in line]
    assert lines, proc.output[-3000:]
    loss = float(lines[-1].split("| loss ")[1].split()[0])
    # The same checkpoint, the same subset: fairseq-train's own last validation gave the same loss.
    assert loss == pytest.approx(float(json_log_records(output, "valid")[-1]["valid_loss"]), abs=0.002)


def test_checkpoint_loads_with_safe_loading_and_no_environment_variable(tiny_mt_checkpoint):
    save_dir, _ = tiny_mt_checkpoint
    script = (
        "import sys, torch, fairseq_ext.plugin\n"
        "from fairseq import checkpoint_utils\n"
        "state = checkpoint_utils.load_checkpoint_to_cpu(sys.argv[1])\n"
        "print('loaded', state['optimizer_history'][-1]['num_updates'])\n"
    )
    proc = run(["python", "-c", script, save_dir / "checkpoint_last.pt"], env=clean_env())
    assert "loaded 40" in proc.output


def test_without_the_plugin_torch_refuses_the_checkpoint(tiny_mt_checkpoint):
    """Shows what the plugin fixes, and that it did not switch safe loading off for everyone."""
    save_dir, _ = tiny_mt_checkpoint
    script = "import sys, torch\ntorch.load(sys.argv[1])\n"
    proc = run(["python", "-c", script, save_dir / "checkpoint_last.pt"], env=clean_env(), check=False)
    assert proc.returncode != 0 and "Weights only load failed" in proc.output


def test_train_resumes_from_a_restore_file(multi30k_2k, tiny_mt_checkpoint, tmp_path):
    save_dir, _ = tiny_mt_checkpoint
    proc = run(["fairseq-train", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task", "translation",
                *TINY_TRANSFORMER, *TRAIN_SETTINGS, "--max-update", "45", "--save-dir", tmp_path,
                "--restore-file", save_dir / "checkpoint_last.pt"])
    assert "Loaded checkpoint" in proc.output
    assert json_log_records(proc.output, "train")[-1]["train_num_updates"] == "45"


def test_user_dir_and_installed_package_in_one_process(tmp_path):
    script = (
        "import argparse, fairseq_ext\n"
        "from fairseq import utils\n"
        f"utils.import_user_module(argparse.Namespace(user_dir='fairseq_ext'))\n"
        f"utils.import_user_module(argparse.Namespace(user_dir='{REPO / 'fairseq_ext'}'))\n"
        "print('ok')\n"
    )
    assert "ok" in run(["python", "-c", script]).output
