"""`analyze.py frontier` output: every config with its frontier flag, and a plot, for each view of a sweep.

    all            every config: the deployment question (with both compressor families: their combined frontier)
    paper          dense and the paper's compressors (magnitude pruning, round-to-nearest quantization)
    calibrated     dense and the calibrated compressors (SparseGPT or Wanda pruning, GPTQ quantization)
    pruning        dense and pruning-only configs
    quantization   dense and quantization-only configs
    speed          dense, structured pruning and int8-kernel configs (their memory is that of the running weights)

The two family views are drawn when the sweep has calibrated configs (without them, the paper's family is all
there is); a view with no configs of its own is left out.
"""
from dataclasses import dataclass
from pathlib import Path

from .frontier import family_records, pareto_frontier, pruning_records, quantization_records, speed_records
from .plots import PlottingUnavailable, plot_frontier
from .sweep_results import FAMILIES, compressor_family, level_label, models_by_size
from .tables import markdown_table, write_csv, write_json

VIEWS = {
    "all": (lambda records: records, "every compression config"),
    **{family: (lambda records, family=family: family_records(records, family), description)
       for family, description in FAMILIES.items()},
    "pruning": (pruning_records, "pruning only"),
    "quantization": (quantization_records, "quantization only"),
    "speed": (speed_records, "structured pruning and int8 kernels"),
}
COLUMNS = ["model", "params", "method", "level", "family", "sparsity", "bits", "prune_method", "quant_method",
           "calibration_samples", "calibration_seconds", "prune_heads", "prune_ffn", "int8", "compressed_mb", "fp32_mb",
           "metric", "value", "examples", "tokens_per_s", "latency_ms", "on_frontier", "checkpoint", "subset"]


@dataclass(frozen=True)
class FrontierView:
    name: str
    description: str
    records: list
    frontier: list
    table: Path
    plot: object  # Path, or None without matplotlib


@dataclass(frozen=True)
class FrontierFiles:
    views: list  # FrontierView, for the views that have configs
    plot_problem: object  # why there are no plots, or None

    def view(self, name):
        return next(view for view in self.views if view.name == name)


def frontier_rows(records, frontier):
    on_frontier = {id(r) for r in frontier}
    size_rank = {name: rank for rank, (name, _) in enumerate(models_by_size(records))}
    ordered = sorted(records, key=lambda r: (size_rank[r["model"]], r["compressed_mb"], r["sparsity"], -r["bits"]))
    return [{**r, "level": level_label(r), "family": compressor_family(r), "on_frontier": id(r) in on_frontier}
            for r in ordered]


def has_families(records):
    """Whether the sweep holds configs of the calibrated family, and so two families to set side by side."""
    return any(compressor_family(r) == "calibrated" for r in records)


def frontier_markdown(view):
    return markdown_table([{**r, "level": level_label(r)} for r in view.frontier],
                          ["compressed_mb", "model", "params", "level", "value"],
                          ["MB", "model", "params", "compression", view.records[0]["metric"]])


def write_frontier(records, out, order=None):
    """order: the model names in the order that picks their colors (default: by size)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    views, plot_problem = [], None
    families = has_families(records)
    for name, (choose, description) in VIEWS.items():
        chosen = choose(records)
        if not chosen or (name in FAMILIES and not families):
            continue
        frontier = pareto_frontier(chosen)
        table = out / f"frontier_{name}.csv"
        write_csv(table, frontier_rows(chosen, frontier), COLUMNS)
        plot = out / f"frontier_{name}.png"
        # The view of every config also draws each family's own frontier, to show where they part.
        family_frontiers = ({family: pareto_frontier(family_records(records, family)) for family in FAMILIES}
                            if name == "all" and families else {})
        try:
            plot_frontier(chosen, frontier, plot, f"{records[0]['metric']} vs memory: {description}",
                          connect_levels=name != "all", order=order, family_frontiers=family_frontiers)
        except PlottingUnavailable as problem:
            plot, plot_problem = None, str(problem)
        views.append(FrontierView(name, description, chosen, frontier, table, plot))
    write_json(out / "frontier.json", {view.name: view.frontier for view in views})
    return FrontierFiles(views, plot_problem)
