"""One trained model as the recipes leave it: OUT/train/<name>/ with train.log and, optionally, meta.json.

meta.json ({"name", "arch", "params", "device", "words_per_s", ...}, measure_run) is written by the recipes after
training; runs without it are still analysed, with what the log alone tells.
"""
import json
import math
from dataclasses import dataclass
from pathlib import Path

from . import AnalysisError
from .fairseq_output import json_records, model_params, words_per_s
from .training_log import TrainingLog, read_training_log


@dataclass(frozen=True)
class TrainingRun:
    name: str
    log: TrainingLog
    meta: dict  # {} when meta.json is absent
    params: object  # meta.json's parameter count, or None (the report fills it in from the sweep)

    def words_per_s(self):
        """(words/s, where it comes from): meta.json's measurement, else the same measurement from the log."""
        if isinstance(self.meta.get("words_per_s"), (int, float)):
            return float(self.meta["words_per_s"]), "meta.json"
        rate = self.log.words_per_s()
        return (rate, "train log (median train_inner wps)") if rate is not None else (None, "not recorded")


def read_training_run(log_path):
    """The run whose train.log is log_path; its name is the folder's (or meta.json's "name" when given)."""
    log_path = Path(log_path)
    meta = read_meta(log_path.parent / "meta.json")
    return TrainingRun(name=str(meta.get("name") or log_path.parent.name), log=read_training_log(log_path), meta=meta,
                       params=meta.get("params"))


def read_training_runs(log_paths):
    runs = [read_training_run(path) for path in log_paths]
    names = [run.name for run in runs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise AnalysisError(f"--logs: several logs are named {', '.join(duplicates)} (one folder per model)")
    return sorted(runs, key=size_order)


def size_order(run):
    """Smallest first where sizes are known, then by name."""
    return (run.params is None, run.params or 0, run.name)


def read_meta(path):
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise AnalysisError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise AnalysisError(f"{path}: expected a JSON object like {{\"name\", \"arch\", \"params\", ...}}")
    return meta


def measure_run(save_dir, arch, budget_s, device):
    """meta.json's content for the run in save_dir (recipes/lib/train_budget.py writes it), from its train.log:
    words/s as fairseq_output.words_per_s defines it; ``device`` says what trained it."""
    text = (Path(save_dir) / "train.log").read_text(errors="replace")
    records = list(json_records(text.splitlines()))
    inner = [r for r in records if "num_updates" in r and "wps" in r]
    epochs = [r for r in records if "train_wps" in r]
    valid = [r for r in records if "valid_loss" in r]
    rate = words_per_s(inner)
    if rate is None and len(epochs) == 1 and float(epochs[0].get("train_train_wall", 0)) > 0:
        # A model too slow to log a rate (one update in its budget): words per update x updates / seconds spent
        # in training steps, which fairseq rounds to the second.
        epoch = epochs[0]
        rate = float(epoch["train_wpb"]) * int(epoch["train_num_updates"]) / float(epoch["train_train_wall"])
    updates = max([int(r["num_updates"]) for r in inner] + [int(r["train_num_updates"]) for r in epochs], default=0)
    return {
        "name": Path(save_dir).name,
        "arch": arch,
        "params": model_params(text),
        "device": device,
        "words_per_s": rate,
        "budget_s": budget_s,
        "updates": updates,
        "train_wall_s": float(epochs[-1]["train_wall"]) if epochs else None,
        "first_valid_loss": float(valid[0]["valid_loss"]) if valid else None,
        "valid_loss": float(valid[-1]["valid_loss"]) if valid else None,
        # The masked LM's accuracy, and its loss and accuracy on text tokens (criterion masked_lm_accuracy).
        **{key: float(valid[-1][key]) for key in ("valid_accuracy", "valid_text_loss", "valid_text_accuracy")
           if valid and key in valid[-1]},
        **({"first_valid_text_loss": float(valid[0]["valid_text_loss"])} if valid and "valid_text_loss" in valid[0]
           else {}),
    }


def unigram_entropy(dictionary):
    """Bits per token of the unigram distribution of a fairseq dict.txt's counts (its text tokens: fairseq writes
    no count for <s>, </s>, <pad>, <unk>): what a masked LM scores that has learned word frequencies alone."""
    counts = []
    for line in Path(dictionary).read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1].isdigit():
            counts.append(int(fields[1]))
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts if c) if total else None
