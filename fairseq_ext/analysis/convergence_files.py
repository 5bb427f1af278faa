"""`analyze.py convergence` output: the curves' points, the time-to-target table and the two plots."""
from dataclasses import dataclass
from pathlib import Path

from .convergence import convergence_curves, curve_rows, default_target, time_to_target_rows
from .plots import PlottingUnavailable, plot_convergence
from .tables import markdown_table, write_csv, write_json

POINT_COLUMNS = ["model", "params", "metric", "updates", "wall_s", "wall_hours", "value"]
TARGET_COLUMNS = ["model", "params", "target", "updates", "wall_hours", "best", "validations"]
NOT_REACHED = "not reached"


@dataclass(frozen=True)
class ConvergenceFiles:
    curves: list
    target: float
    target_is_default: bool
    rows: list  # time_to_target_rows
    plots: list  # the PNGs written (none without matplotlib)
    plot_problem: object  # why there are no plots, or None

    def markdown(self):
        return markdown_table(display_rows(self.rows), TARGET_COLUMNS,
                              ["model", "params", "target", "updates to target", "wall-clock hours to target",
                               "best value", "validations"])


def display_rows(rows):
    """The table as people read it: "not reached" instead of an empty cell."""
    return [{**row, "updates": row["updates"] if row["reached"] else NOT_REACHED,
             "wall_hours": row["wall_hours"] if row["reached"] else NOT_REACHED} for row in rows]


def write_convergence(runs, metric, target, out, order=None, target_models=None):
    """order: the model names in the order that picks their colors (default: the runs'). target_models: the models
    whose curves set the default target (default: all; the report passes the models that learned)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    curves = convergence_curves(runs, metric)
    target_is_default = target is None
    if target_is_default:
        racers = [c for c in curves if target_models is None or c.name in target_models]
        target = default_target(racers or curves)
    rows = time_to_target_rows(curves, target)
    write_csv(out / "convergence_points.csv", curve_rows(curves), POINT_COLUMNS)
    write_csv(out / "time_to_target.csv", display_rows(rows), ["metric", "reached", *TARGET_COLUMNS])
    write_json(out / "time_to_target.json", rows)
    plots, plot_problem = draw_plots(curves, target, out, order)
    files = ConvergenceFiles(curves, target, target_is_default, rows, plots, plot_problem)
    (out / "time_to_target.md").write_text(files.markdown() + "\n")
    return files


def draw_plots(curves, target, out, order):
    """(the PNGs written, None), or ([], why not) when matplotlib is missing: the tables stand without them."""
    try:
        paths = []
        for x in ("wall", "updates"):
            paths.append(out / f"convergence_{curves[0].metric}_vs_{x}.png")
            plot_convergence(curves, x, paths[-1], target, order)
        return paths, None
    except PlottingUnavailable as problem:
        return [], str(problem)
