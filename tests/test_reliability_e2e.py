"""Reliability through the real fairseq CLIs (issue 8): untrusted pickles are refused before they run, damaged
files fail with one clear line, a mismatched dictionary is named with both sizes, bad flags stop start-up with
every problem at once, and a run SIGKILLed at random points of gradual pruning + QAT resumes exactly."""
import os
import random
import re
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from clitools import BIN, REPO, clean_env, compressed_summary, json_log_records, run
from conftest import TINY_TRANSFORMER, TRAIN_SETTINGS
import fairseq_ext.plugin  # noqa: F401  (in-process torch.load allows exactly what fairseq checkpoints hold)
from fairseq_ext.checkpoint_loading import CHECKPOINT_SAFE_GLOBALS
from fairseq_ext.compression import sparsity_at
from fairseq_ext.compression.pruning import pruned_count

pytestmark = pytest.mark.e2e

GENERATE = ["fairseq-generate", "--user-dir", "fairseq_ext", "--task", "translation", "--gen-subset", "test",
            "--cpu", "--beam", "1", "--batch-size", "64", "--max-len-a", "0", "--max-len-b", "3"]


class PlantFile:
    """Unpickling this runs os.system: it would create `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def one_error(output):
    """The CLI failed with a single exception line (the last line), and torch's long message is not shown."""
    last = output.strip().splitlines()[-1]
    assert "Weights only load failed" not in output and "PytorchStreamReader" not in output.split(last)[0], output[-3000:]
    return last


def parallel(*calls):
    with ThreadPoolExecutor(2) as pool:  # tiny runs leave a core idle
        return list(pool.map(lambda call: call(), calls))


@pytest.fixture(scope="module")
def packed(tiny_mt_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "model.fxc"
    run(["scripts/pack_checkpoint.py", tiny_mt_checkpoint[0] / "checkpoint_last.pt", "--out", out,
         "--prune-sparsity", "0.5", "--quant-bits", "4"])
    return out


def test_bad_files_fail_fairseq_generate_with_one_clear_line_and_a_planted_pickle_never_runs(
        multi30k_2k, tiny_mt_checkpoint, packed, tmp_path):
    # 1. A checkpoint with a planted __reduce__ (a shared file from a stranger).
    marker = tmp_path / "PLANTED_CODE_RAN"
    state = torch.load(tiny_mt_checkpoint[0] / "checkpoint_last.pt", map_location="cpu")
    state["extra_state"]["payload"] = PlantFile(marker)
    evil = tmp_path / "evil.pt"
    torch.save(state, evil)
    # 2. A packed file cut short (a copy killed mid-way) and one with a flipped byte (a bad disk or transfer).
    data = packed.read_bytes()
    truncated, altered = tmp_path / "truncated.fxc", tmp_path / "altered.fxc"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    altered.write_bytes(data[:-100] + bytes([data[-100] ^ 0x10]) + data[-99:])
    # 3. A data folder whose dictionary is not the checkpoint's (8 more entries).
    other = tmp_path / "other_dict"
    other.mkdir()
    for f in (multi30k_2k / "bin").iterdir():
        if f.name.startswith("test.") or f.name.startswith("dict."):
            (other / f.name).write_bytes(f.read_bytes())
    for lang in ("en", "fr"):
        with open(other / f"dict.{lang}.txt", "a") as extra:
            extra.writelines(f"zzextra{i} 1\n" for i in range(8))

    def generate(data_dir, path):
        return lambda: run([GENERATE[0], data_dir, *GENERATE[1:], "--path", path], check=False)

    runs = parallel(generate(multi30k_2k / "bin", evil), generate(multi30k_2k / "bin", truncated),
                    generate(multi30k_2k / "bin", altered), generate(other, tiny_mt_checkpoint[0] / "checkpoint_last.pt"))
    assert all(proc.returncode != 0 for proc in runs)
    assert not marker.exists(), "the planted pickle ran"
    assert one_error(runs[0].output) == (
        f"fairseq_ext.checkpoint_loading.UnsafeCheckpointError: refusing to load {evil}: it needs posix.system, "
        "which is not among the types fairseq and fairseq_ext write into checkpoints; it was refused before anything "
        "in it ran. Only if you trust this file, opt in for this one command: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "
        "<your fairseq command>")
    assert one_error(runs[1].output).startswith(
        f"ValueError: {truncated} is not a valid compressed model file: truncated")
    assert one_error(runs[2].output) == (
        f"ValueError: {altered} is not a valid compressed model file: the payload checksum does not match")
    vocabulary = len(state["model"]["encoder.embed_tokens.weight"])
    assert one_error(runs[3].output) == (
        "fairseq_ext.checkpoint_loading.DictionaryMismatchError: dictionary mismatch: "
        f"{tiny_mt_checkpoint[0] / 'checkpoint_last.pt'} was trained with a dictionary of {vocabulary} entries "
        f"(encoder.embed_tokens.weight), but the dictionary loaded here from {other} has {vocabulary + 8} entries; "
        "pass the data folder (dict.*.txt) the model was trained with")


def test_bad_input_gets_one_clear_error_at_start_up_and_a_packed_file_reports_what_it_holds(
        multi30k_2k, tiny_mt_checkpoint, packed, tmp_path):
    """Issue 29's probes: each fails before any model work with one block naming the flag or the file, never a
    Python traceback, never advice to turn safe loading off; a packed file decoded with no flags reports its own
    bits and bytes, and flags that disagree with it are refused."""
    damaged = tmp_path / "damaged.fxc"
    data = packed.read_bytes()
    damaged.write_bytes(bytes(16) + data[16:])
    compressed = [GENERATE[0], multi30k_2k / "bin", *GENERATE[1:], "--task", "compressed_translation"]
    checkpoint = tiny_mt_checkpoint[0] / "checkpoint_last.pt"
    gptq = ["--path", checkpoint, "--quant-bits", "4", "--quant-method", "gptq"]
    state = torch.load(checkpoint, map_location="cpu")
    state["model"]["decoder.layers.0.fc1.weight"][3, 5] = float("nan")
    nan_checkpoint = tmp_path / "nan.pt"
    torch.save(state, nan_checkpoint)
    group_7 = ["--path", checkpoint, "--quant-bits", "4", "--quant-granularity", "group", "--quant-group-size", "7"]
    as_packed, as_8_bits, seed, subset, broken, groups, nan = parallel(
        lambda: run([*compressed, "--path", packed]),
        lambda: run([*compressed, "--path", packed, "--quant-bits", "8"], check=False),
        lambda: run([*compressed, *gptq, "--calib-seed", "-1"], check=False),
        lambda: run([*compressed, *gptq, "--calib-subset", "nonexistent"], check=False),
        lambda: run([GENERATE[0], multi30k_2k / "bin", *GENERATE[1:], "--path", damaged], check=False),
        lambda: run([*compressed, *group_7], check=False),
        lambda: run([*compressed, "--path", nan_checkpoint, "--prune-sparsity", "0.5", "--prune-method", "sparsegpt",
                     "--calib-samples", "16"], check=False))
    figures = compressed_summary(as_packed.output)
    assert figures["sparsity"] == pytest.approx(0.5, abs=0.01) and figures["bits"] == 4, figures
    assert figures["ratio"] > 2, figures  # not the float model's 1.0
    for proc in (as_8_bits, seed, subset, broken, groups, nan):
        assert proc.returncode == 1 and "Traceback" not in proc.output, proc.output[-3000:]
        assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in proc.output
    assert one_error(as_8_bits.output) == (
        "ValueError: a packed file holds its weights compressed already; the compression flags ask for sparsity 0.0 "
        "(the file: 0.5), bits 8 (the file: 4): drop the --prune-*/--quant-* flags, or give the file's")
    assert "--calib-seed must be an integer in [0, 2**32), numpy's seeds (got -1)" in seed.output
    assert "--calib-subset nonexistent: the data folder has no such subset; it has test, train, valid" in subset.output
    assert all("loading model" not in proc.output for proc in (seed, subset))  # refused before the model loads
    assert re.fullmatch(r"ValueError: --quant-group-size 7 does not divide the width of (\d+) of the \1 quantized "
                        r"matrices \(e\.g\. \S+, (64|128) columns\); the sizes that divide every width: 1, 2, 4, 8, "
                        r"16, 32, 64", one_error(groups.output)), groups.output[-3000:]
    fc1 = state["model"]["decoder.layers.0.fc1.weight"]
    assert one_error(nan.output) == (
        f"ValueError: the checkpoint's weights hold NaN or infinite values: decoder.layers.0.fc1.weight (1 of "
        f"{fc1.numel()} entries); the checkpoint is damaged or was saved after training diverged: load another one "
        "(compression cannot repair it)")
    assert one_error(broken.output) == (
        f"ValueError: cannot read checkpoint {damaged} ({len(data)} bytes): it is truncated or not a torch checkpoint "
        "(it holds a packed file's header, but its first bytes are not b'FSEXTCMP': a damaged .fxc file)")


def test_the_opt_in_loads_a_trusted_legacy_file_and_other_planted_calls_are_refused_too(tiny_mt_checkpoint, tmp_path,
                                                                                       monkeypatch):
    """In process, the loader every fairseq CLI uses: builtins.open via __reduce__ is refused like os.system; the
    documented opt-in (for a file you trust) loads a checkpoint holding a class outside the allowlist."""
    import builtins

    from fairseq import checkpoint_utils

    from fairseq_ext.checkpoint_loading import UnsafeCheckpointError

    class OpensAFile:
        def __reduce__(self):
            return builtins.open, (str(tmp_path / "OPENED"), "w")

    state = torch.load(tiny_mt_checkpoint[0] / "checkpoint_last.pt", map_location="cpu")
    state["extra_state"]["payload"] = OpensAFile()
    path = tmp_path / "opens.pt"
    torch.save(state, path)
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    with pytest.raises(UnsafeCheckpointError, match=r"it needs io\.open, .*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"):
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert not (tmp_path / "OPENED").exists()

    legacy = tmp_path / "legacy.pt"
    state["extra_state"]["payload"] = pytest.approx  # a harmless class outside the allowlist
    torch.save(state, legacy)
    with pytest.raises(UnsafeCheckpointError, match="_pytest"):
        checkpoint_utils.load_checkpoint_to_cpu(str(legacy))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    assert checkpoint_utils.load_checkpoint_to_cpu(str(legacy))["extra_state"]["payload"] is pytest.approx


def test_several_bad_flags_stop_fairseq_train_with_one_error_listing_all(multi30k_2k, tmp_path):
    train = ["fairseq-train", multi30k_2k / "bin", "--user-dir", "fairseq_ext", "--task", "compressed_translation",
             *TINY_TRANSFORMER, *TRAIN_SETTINGS, "--max-update", "5", "--save-dir", tmp_path]
    values, choice = parallel(
        lambda: run([*train, "--quant-bits", "12", "--prune-sparsity", "-0.1", "--prune-every", "0",
                     "--prune-start-update", "-3", "--prune-fraction", "0.3"], check=False),
        lambda: run([*train, "--prune-schedule", "cubic", "--quant-scheme", "sym"], check=False))
    assert values.returncode != 0 and not list(tmp_path.iterdir())
    assert values.output.count("invalid compression flags") == 1
    message = values.output[values.output.index("invalid compression flags"):]
    assert "(5 problems)" in message, message
    for expected in ("--quant-bits=12: allowed values are 2, 3, 4, 5, 6, 7, 8, 16, 32",
                     "--prune-sparsity=-0.1: must be a number in [0, 1)", "--prune-every must be >= 1 (got 0)",
                     "--prune-start-update must be >= 0 (got -3)",
                     "--prune-fraction 0.3 only applies to --prune-schedule iterative"):
        assert expected in message, message
    # Unknown choices are argparse's: flag and allowed values, no traceback.
    assert choice.returncode == 2 and "Traceback" not in choice.output
    assert re.search(r"--prune-schedule: invalid choice: 'cubic' \(choose from '?oneshot'?, '?iterative'?, "
                     r"'?gradual'?\)", choice.output), choice.output[-2000:]


# ---- crash safety: SIGKILL at seeded random points of gradual pruning + QAT ----

MAX_UPDATE = 12
SCHEDULE = dict(schedule="gradual", target=0.5, start=2, end=10, every=2)
GRADUAL_QAT = ["--prune-sparsity", "0.5", "--prune-schedule", "gradual", "--prune-start-update", "2",
               "--prune-end-update", "10", "--prune-every", "2", "--quant-bits", "4", "--quant-aware"]


def finetune(multi30k_2k, tiny_mt_checkpoint, save_dir):
    """A finetune (--finetune-from-model) with gradual pruning and QAT, a checkpoint every 3 updates, all kept."""
    return [str(BIN / "fairseq-train"), str(multi30k_2k / "bin"), "--user-dir", "fairseq_ext",
            "--task", "compressed_translation", *TINY_TRANSFORMER, *TRAIN_SETTINGS,
            "--finetune-from-model", str(tiny_mt_checkpoint[0] / "checkpoint_last.pt"),
            "--max-update", str(MAX_UPDATE), "--max-tokens", "1000", "--log-interval", "1",
            "--save-interval-updates", "3", "--keep-interval-updates", "-1", "--disable-validation",
            "--save-dir", str(save_dir), *GRADUAL_QAT]


def run_until_killed(cmd, kill_when):
    """Start cmd, SIGKILL its process group at the first output line for which kill_when(line) holds."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if kill_when(line):
                break
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(lines)[-3000:]
    return "".join(lines)


def pruned_matrices(state):
    return {k: v for k, v in state["model"].items()
            if k.endswith(".weight") and v.dim() == 2 and "embed_tokens" not in k and "output_projection" not in k}


def saved_updates(state):
    return state["optimizer_history"][-1]["num_updates"]


def check_every_checkpoint(save_dir):
    """Every checkpoint loads with weights_only=True, holds exactly the scheduled zeros for the updates it claims,
    and its name claims those updates. Returns {name: state}."""
    states = {}
    for path in sorted(save_dir.glob("checkpoint*.pt")):
        state = torch.load(path, map_location="cpu", weights_only=True)
        updates = saved_updates(state)
        match = re.fullmatch(r"checkpoint_1_(\d+)\.pt", path.name)
        if match:
            assert int(match.group(1)) == updates, path
        matrices = pruned_matrices(state)
        zeros, total = sum(int((w == 0).sum()) for w in matrices.values()), sum(w.numel() for w in matrices.values())
        assert zeros == pruned_count(sparsity_at(updates, **SCHEDULE), total), (path.name, updates)
        states[path.name] = state
    return states


def test_sigkill_at_random_points_of_gradual_pruning_and_qat_resumes_exactly(multi30k_2k, tiny_mt_checkpoint,
                                                                             tmp_path):
    rng = random.Random(8)
    reference, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    kills = []

    def interrupted():
        # Two kills at seeded random points: after some update's log line, or while a checkpoint is being written.
        outputs = []
        for low in (2, 7):
            update = rng.randint(low, low + 3)
            if rng.random() < 0.5:
                kills.append(f"after update {update}")
                when = lambda line, u=update: f'"num_updates": "{u}"' in line  # noqa: E731
            else:
                update = 3 * max(1, update // 3)
                kills.append(f"saving checkpoint_1_{update}.pt")
                when = lambda line, u=update: "Saving checkpoint" in line and f"checkpoint_1_{u}.pt" in line  # noqa: E731
            outputs.append(run_until_killed(finetune(multi30k_2k, tiny_mt_checkpoint, killed), when))
            states = check_every_checkpoint(killed)  # after each kill: only whole, honest checkpoints
            last = saved_updates(states["checkpoint_last.pt"]) if "checkpoint_last.pt" in states else 0
            # checkpoint_last.pt is the copy fairseq makes after the interval checkpoint: at most one save behind
            assert max([saved_updates(s) for s in states.values()], default=0) - last in (0, 3)
            outputs.append(last)
        return outputs, run(finetune(multi30k_2k, tiny_mt_checkpoint, killed)).output

    (outputs, final), _ = parallel(interrupted, lambda: run(finetune(multi30k_2k, tiny_mt_checkpoint, reference)))
    first, last_1, second, last_2 = outputs
    print("kills:", kills, "checkpoint_last.pt then at updates", last_1, last_2)

    # Each run restarted from checkpoint_last.pt's update count (0: none yet) and redid what followed it.
    for output, last in ((first, 0), (second, last_1), (final, last_2)):
        if last:
            assert re.search(rf"Loaded checkpoint \S+checkpoint_last\.pt \(epoch 1 @ {last} updates\)", output)
        done = [int(r["num_updates"]) for r in json_log_records(output, "train_inner")]
        assert done == list(range(last + 1, last + 1 + len(done))), (last, done)
    assert [int(r["num_updates"]) for r in json_log_records(final, "train_inner")][-1] == MAX_UPDATE

    # Same masks and schedule as the uninterrupted run in every kept checkpoint; all load safely.
    ours, theirs = check_every_checkpoint(killed), check_every_checkpoint(reference)
    assert sorted(ours) == sorted(theirs) == ["checkpoint_1_12.pt", "checkpoint_1_3.pt", "checkpoint_1_6.pt",
                                              "checkpoint_1_9.pt", "checkpoint_last.pt"]
    for name in theirs:
        a, b = pruned_matrices(ours[name]), pruned_matrices(theirs[name])
        assert all(torch.equal(a[k] == 0, b[k] == 0) for k in b), name

    # The allowlist is exactly what these real checkpoints (training, finetuning, QAT, resumed) need.
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()  # what each file needs beyond torch's own defaults
    try:
        needed = {g for d in (killed, reference, tiny_mt_checkpoint[0]) for p in d.glob("checkpoint*.pt")
                  for g in torch.serialization.get_unsafe_globals_in_checkpoint(p)}
    finally:
        torch.serialization.add_safe_globals(allowed)
    assert needed == {f"{t.__module__}.{t.__qualname__}" for t in CHECKPOINT_SAFE_GLOBALS}
