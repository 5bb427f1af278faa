"""What pretraining added: the same fine-tuning from the pretrained checkpoint and from random weights, over seeds.

The recipes leave, per task, RUN/finetune/<model>/ (seed 1) and RUN/finetune-seed<k>/<model>/ (seed k >= 2) for
the pretrained model, and the control (the same model and fine-tuning from random weights) in RUN/scratch/<model>/
and RUN/scratch-seed<k>/<model>/, each with a meta.json whose valid_accuracy is the dev accuracy at the end of
fine-tuning. One seed says little when two fine-tunings of the same model differ by a point or more: the gain is
the difference of the means, and it is larger than the spread when every pretrained seed beats every control seed.
"""
import re
import statistics
from dataclasses import dataclass

from .training_run import read_meta


@dataclass(frozen=True)
class Seeds:
    """The final dev accuracies (%) of one model's fine-tunings, one per seed."""

    values: tuple

    @property
    def mean(self):
        return statistics.fmean(self.values)

    @property
    def sd(self):
        """The sample standard deviation (0 for one seed)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self):
        """"80.12 +- 0.41 (3 seeds: 79.70-80.50)"."""
        if len(self.values) == 1:
            return f"{self.values[0]:.2f} (1 seed)"
        return (f"{self.mean:.2f} +- {self.sd:.2f} ({len(self.values)} seeds: {min(self.values):.2f}-"
                f"{max(self.values):.2f})")


def seed_folders(run, kind):
    """RUN/<kind> (seed 1), then RUN/<kind>-seed<k> by k."""
    numbered = [(int(m.group(1)), path) for path in run.glob(f"{kind}-seed*")
                if (m := re.fullmatch(rf"{kind}-seed(\d+)", path.name)) and path.is_dir()]
    return [run / kind] + [path for _, path in sorted(numbered)]


def seeds(run, kind, name):
    values = [read_meta(folder / name / "meta.json").get("valid_accuracy") for folder in seed_folders(run, kind)]
    return Seeds(tuple(v for v in values if v is not None))


def control_rows(run):
    """[{"model", "pretrained": Seeds, "scratch": Seeds, "gain", "beyond_spread"}] for every model with a control
    whose both sides have a score."""
    rows = []
    for scratch in sorted(run.glob("scratch/*/meta.json")):
        name = scratch.parent.name
        pretrained, from_scratch = seeds(run, "finetune", name), seeds(run, "scratch", name)
        if not pretrained.values or not from_scratch.values:
            continue
        rows.append({"model": name, "pretrained": pretrained, "scratch": from_scratch,
                     "gain": pretrained.mean - from_scratch.mean,
                     "beyond_spread": min(pretrained.values) > max(from_scratch.values)})
    return rows


def pretrained_seeds(run):
    """{model: Seeds} for every model fine-tuned from its pretraining (RUN/finetune/<model>/ and its seed folders)."""
    found = {path.parent.name: seeds(run, "finetune", path.parent.name)
             for path in sorted(run.glob("finetune/*/meta.json"))}
    return {name: values for name, values in found.items() if values.values}


def control_verdict(row):
    """One sentence: the gain of the means and whether it is larger than the seed-to-seed spread."""
    pretrained, scratch = row["pretrained"], row["scratch"]
    spread = ("larger than the spread: every pretrained seed beats every control seed" if row["beyond_spread"] else
              "within the spread: the seeds' ranges overlap" if row["gain"] > 0 else "no gain")
    return (f"{row['model']}: pretraining added {row['gain']:+.2f} points of dev accuracy on the mean "
            f"({pretrained.text()} pretrained vs {scratch.text()} from random weights), {spread}.")


def control_markdown(rows):
    header = ["| model | pretrained, then fine-tuned | fine-tuned from random weights | gain of the means (points) "
              "| gain > spread |", "|---|---|---|---|---|"]
    return "\n".join(header + [f"| {row['model']} | {row['pretrained'].text()} | {row['scratch'].text()} | "
                               f"{row['gain']:+.2f} | {'yes' if row['beyond_spread'] else 'no'} |"
                               for row in rows])


def what_the_frontier_shows(rows):
    """One sentence before the compression frontier: whether its models are ones whose pretraining added. Where
    none did beyond the seeds' spread, the frontier ranks how each size fine-tuned from this pretraining, which is
    not the paper's claim (a larger pretrained model, compressed, beats a smaller one)."""
    added = [row["model"] for row in rows if row["gain"] > 0 and row["beyond_spread"]]
    if added:
        return (f"Pretraining added beyond the seeds' spread ({', '.join(added)}): the compression frontier below is "
                f"drawn from fine-tuned models whose pretraining added.")
    return ("Pretraining added nothing beyond the seeds' spread here, so the compression frontier below is drawn from "
            "fine-tuned models whose pretraining did not add: it ranks how each size fine-tuned from this "
            "pretraining, and does not test the paper's claim that a larger pretrained model, compressed, beats a "
            "smaller one at the same MB.")
