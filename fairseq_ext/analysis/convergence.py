"""Validation metric vs wall-clock and vs updates, one curve per model size, and the time each takes to a target.

The paper's first claim is about this race: larger models reach a given validation loss in fewer updates, and
often in less wall-clock time despite their slower steps.
"""
from dataclasses import dataclass

from . import AnalysisError

# Metrics where a larger value is better; all others (loss, nll_loss, ppl) are better smaller.
HIGHER_IS_BETTER = ("bleu", "accuracy", "acc", "f1", "mcc")


def higher_is_better(metric):
    return metric.rsplit("_", 1)[-1] in HIGHER_IS_BETTER


@dataclass(frozen=True)
class CurvePoint:
    updates: int
    wall_s: float
    value: float

    @property
    def wall_hours(self):
        return self.wall_s / 3600


@dataclass(frozen=True)
class Curve:
    name: str
    params: object  # int, or None when the run has no meta.json
    metric: str
    points: list  # CurvePoint, one per logged validation, in update order

    def best(self):
        pick = max if higher_is_better(self.metric) else min
        return pick(point.value for point in self.points)


def convergence_curves(runs, metric):
    """One curve per run: every validation that logged `metric`. An unknown metric is an error naming --metric."""
    curves = []
    for run in runs:
        points = [CurvePoint(v.updates, v.wall_s, v.metrics[metric])
                  for v in run.log.validations if metric in v.metrics]
        if not points:
            available = ", ".join(n for n in run.log.metric_names() if not n.endswith("num_updates")) or "none"
            raise AnalysisError(f"--metric {metric}: not in the validations of {run.log.path} (logged: {available})")
        curves.append(Curve(run.name, run.params, metric, points))
    return curves


def reaches(value, target, metric):
    return value >= target if higher_is_better(metric) else value <= target


def first_reaching(curve, target):
    """The first validation at or past the target, or None: the target was not reached."""
    return next((p for p in curve.points if reaches(p.value, target, curve.metric)), None)


def default_target(curves):
    """The best value that every run reached (the worst of the runs' bests): a race all of them finish."""
    bests = [curve.best() for curve in curves]
    return min(bests) if higher_is_better(curves[0].metric) else max(bests)


def time_to_target_rows(curves, target):
    rows = []
    for curve in curves:
        hit = first_reaching(curve, target)
        rows.append({
            "model": curve.name,
            "params": curve.params,
            "metric": curve.metric,
            "target": target,
            "reached": hit is not None,
            "updates": hit.updates if hit else None,
            "wall_hours": hit.wall_hours if hit else None,
            "best": curve.best(),
            "validations": len(curve.points),
        })
    return rows


def curve_rows(curves):
    """Every plotted point, for the CSV that sits beside the plots."""
    return [
        {"model": c.name, "params": c.params, "metric": c.metric, "updates": p.updates,
         "wall_s": p.wall_s, "wall_hours": p.wall_hours, "value": p.value}
        for c in curves for p in c.points
    ]
