"""Read a fairseq training log written with `--log-format json`: its training and validation records.

Both forms fairseq_output.json_records reads: the file fairseq-train writes with `--log-file`, and its console
output saved with `tee`. A record's kind is told by its keys, the same in both forms: `num_updates` (train_inner, every --log-interval
updates), `train_num_updates` (the end-of-epoch summary) and `<subset>_num_updates` (a validation).

fairseq's validation records carry no wall time, so a validation is given the training clock at its update.
"""
import math
from dataclasses import dataclass, field
from pathlib import Path

from . import AnalysisError
from .fairseq_output import json_records, words_per_s


@dataclass(frozen=True)
class Validation:
    subset: str
    updates: int
    wall_s: float
    metrics: dict = field(hash=False)  # e.g. {"valid_loss": 8.85, "valid_ppl": 355.7, ...}


@dataclass(frozen=True)
class TrainingLog:
    path: Path
    train_inner: list  # the raw train_inner records, numbers as floats
    validations: list  # Validation, in update order

    def metric_names(self):
        return sorted({name for v in self.validations for name in v.metrics})

    def words_per_s(self):
        """fairseq_output.words_per_s of the train_inner records; None if not logged."""
        return words_per_s([r for r in self.train_inner if isinstance(r.get("wps"), float)])


def read_training_log(path):
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"training log {path} not found")
    train_inner, epochs, validations = [], [], []
    for message in json_records(path.read_text(errors="replace").splitlines()):
        record = {key: as_number(value) for key, value in message.items()}
        if "num_updates" in record:
            train_inner.append(record)
        elif "train_num_updates" in record:
            epochs.append(record)
        elif subset := validation_subset(record):
            validations.append((subset, record))
    if not train_inner and not epochs:
        raise AnalysisError(
            f"training log {path}: no JSON training records (was fairseq-train run with --log-format json?)"
        )
    clock = training_clock(train_inner, epochs)
    if validations and not clock:
        raise AnalysisError(f"training log {path}: its training records carry no wall time to place validations at")
    return TrainingLog(
        path=path,
        train_inner=keep_last_per_update(train_inner, "num_updates"),
        validations=[
            Validation(subset, int(record[f"{subset}_num_updates"]), wall_at(clock, record[f"{subset}_num_updates"]),
                       {k: v for k, v in record.items() if k.startswith(f"{subset}_") and isinstance(v, float)})
            for subset, record in keep_last_validations(validations)
        ],
    )


def as_number(value):
    """fairseq logs numbers as strings ("9.9", "5"); they become floats, anything else stays as it is."""
    if isinstance(value, bool):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return number if math.isfinite(number) else value


def validation_subset(record):
    for key in record:
        if key.endswith("_num_updates") and key != "train_num_updates":
            return key[: -len("_num_updates")]
    return None


def keep_last_per_update(records, key):
    """A run resumed from a checkpoint logs its updates after that checkpoint again: the resumed run's records win."""
    by_update = {record[key]: record for record in records}
    return [by_update[u] for u in sorted(by_update)]


def keep_last_validations(validations):
    by_update = {(subset, record[f"{subset}_num_updates"]): (subset, record) for subset, record in validations}
    return [by_update[key] for key in sorted(by_update, key=lambda k: (k[1], k[0]))]


def training_clock(train_inner, epochs):
    """(update, wall seconds) of every training record.

    train_inner has `wall`; the end-of-epoch summary has it as `train_wall` (its `train_train_wall` is the time
    spent in training steps only).
    """
    clock = [(r["num_updates"], r["wall"]) for r in train_inner if isinstance(r.get("wall"), float)]
    clock += [(r["train_num_updates"], r["train_wall"]) for r in epochs if isinstance(r.get("train_wall"), float)]
    return clock


def wall_at(clock, updates):
    """The training clock when update `updates` finished, i.e. when its validation started.

    A train_inner record at exactly that update is logged just before the validation; the epoch summary at the
    same update comes after it and includes the validation's time, so the earliest (smallest) reading is taken.
    Between two logged updates the clock is interpolated linearly; past the last one, the last reading is used.
    """
    exact = [wall for u, wall in clock if u == updates]
    if exact:
        return min(exact)
    below = max(((u, w) for u, w in clock if u < updates), default=None)
    above = min(((u, w) for u, w in clock if u > updates), default=None)
    if below and above:
        (u0, w0), (u1, w1) = below, above
        return w0 + (w1 - w0) * (updates - u0) / (u1 - u0)
    return (below or above)[1]
