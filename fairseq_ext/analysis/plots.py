"""The PNGs: convergence curves and the compression frontier. matplotlib is optional and imported only here,
when a plot is drawn, with the headless Agg backend (files only, never a window)."""
from . import AnalysisError
from .sweep_results import FAMILIES, compressor_family, level_label, models_by_size
from .tables import number_text, params_text

INSTALL_HINT = ("plots need matplotlib, which is not installed: pip install matplotlib "
                "(or pip install -e '.[plots]'); the tables were written without it")
METHOD_MARKERS = {"dense": "o", "prune": "^", "quant": "s", "prune+quant": "D", "structured": "v", "int8": "P",
                  "structured+int8": "X"}
MAX_FRONTIER_LABELS = 12  # beyond this the labels cover the points they name
# Each compressor family's own frontier, where a plot draws them beside the combined one.
FAMILY_LINES = {"paper": {"color": "tab:gray", "linestyle": ":"},
                "calibrated": {"color": "tab:purple", "linestyle": "-."}}
FAMILY_FRONTIER_LABELS = {"paper": "frontier, the paper's compressors only",
                          "calibrated": "frontier, calibrated compressors only"}


class PlottingUnavailable(AnalysisError):
    pass


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlottingUnavailable(INSTALL_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def model_colors(plt, names, order=None):
    """A color per model by its place in `order` (default: names as given), so that the plots of a report, given
    the report's order, show each model in one color."""
    order = order or names
    palette = plt.get_cmap("tab10").colors
    return {name: palette[order.index(name) % len(palette)] for name in names}


def time_unit(seconds):
    """Short runs read badly in hours: the unit that keeps the largest time between 1 and ~100."""
    if seconds >= 2 * 3600:
        return "hours", 3600
    if seconds >= 2 * 60:
        return "minutes", 60
    return "seconds", 1


def plot_convergence(curves, x, path, target=None, order=None):
    """x: "wall" (wall-clock) or "updates". One line per model; every logged validation is a marker."""
    plt = pyplot()
    colors = model_colors(plt, [c.name for c in curves], order)
    unit, scale = time_unit(max(p.wall_s for c in curves for p in c.points))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for curve in curves:
        xs = [p.updates if x == "updates" else p.wall_s / scale for p in curve.points]
        size = f" ({params_text(curve.params)} params)" if curve.params else ""  # known from meta.json only
        ax.plot(xs, [p.value for p in curve.points], marker="o", markersize=3.5, color=colors[curve.name],
                label=curve.name + size)
    metric = curves[0].metric
    if target is not None:
        ax.axhline(target, color="gray", linestyle="--", linewidth=1, label=f"target {number_text(target)}")
    ax.set_xlabel("updates" if x == "updates" else f"wall-clock ({unit})")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {'updates' if x == 'updates' else 'wall-clock time'}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(plt, fig, path)


def plot_frontier(records, frontier, path, title, connect_levels=False, order=None, family_frontiers=None,
                  xlabel="compressed weights (MB)"):
    """Every config as a point (color: model, marker: method; hollow: a calibrated compressor) and the Pareto
    frontier as a step line; family_frontiers ({family: frontier}) adds each family's own frontier.

    connect_levels joins each model's points of one compressor family in memory order, which reads well when one
    knob varies (the pruning-only and quantization-only plots) and badly when two do.
    """
    plt = pyplot()
    from matplotlib.lines import Line2D  # after pyplot(), which is what reports a missing matplotlib

    sizes = models_by_size(records)
    colors = model_colors(plt, [name for name, _ in sizes], order)
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    mbs = [r["compressed_mb"] for r in records]
    for name, _ in sizes:
        own = sorted((r for r in records if r["model"] == name), key=lambda r: r["compressed_mb"])
        if connect_levels:
            for family, line in level_lines(own):
                ax.plot([r["compressed_mb"] for r in line], [r["value"] for r in line], color=colors[name],
                        alpha=0.5, linewidth=1, linestyle="-." if family == "calibrated" else "-")
        for record in own:
            hollow = compressor_family(record) == "calibrated"
            ax.scatter(record["compressed_mb"], record["value"], s=28, zorder=3, marker=METHOD_MARKERS[record["method"]],
                       facecolors="white" if hollow else colors[name], edgecolors=colors[name], linewidths=1.2)
    for family, own_frontier in (family_frontiers or {}).items():
        ax.step(*zip(*frontier_steps(own_frontier, mbs)), where="post", linewidth=1.2, zorder=2,
                **FAMILY_LINES[family])
    ax.step(*zip(*frontier_steps(frontier, mbs)), where="post", color="black", linestyle="--", linewidth=1, zorder=2)
    ax.scatter([r["compressed_mb"] for r in frontier], [r["value"] for r in frontier], s=90, zorder=4,
               facecolors="none", edgecolors="black", linewidths=1.2)
    if len(frontier) <= MAX_FRONTIER_LABELS:
        for record in frontier:
            ax.annotate(f"{record['model']} {level_label(record)}", (record["compressed_mb"], record["value"]),
                        textcoords="offset points", xytext=(5, 5), fontsize=7)
    if max(mbs) > 20 * min(mbs):
        ax.set_xscale("log")
    metric = records[0]["metric"]
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} ({'higher' if records[0]['higher_is_better'] else 'lower'} is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    handles = model_and_method_handles(Line2D, colors, sizes, records)
    if any(compressor_family(r) == "calibrated" for r in records):
        handles.append(Line2D([], [], color="gray", marker="o", markerfacecolor="white", linestyle="",
                              label="hollow: calibrated (SparseGPT, GPTQ)"))
    handles.append(Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="none",
                          label="Pareto frontier" + (", all compressors" if family_frontiers else "")))
    handles += [Line2D([], [], linewidth=1.2, label=FAMILY_FRONTIER_LABELS[family], **FAMILY_LINES[family])
                for family in family_frontiers or {}]
    ax.legend(handles=handles, fontsize=7, loc="best")
    save(plt, fig, path)


def level_lines(own):
    """(family, records) to join for one model: each compressor family's configs with dense, or all the configs
    where none has a family (the speed view)."""
    lines = [(family, [r for r in own if compressor_family(r) in (None, family)]) for family in FAMILIES
             if any(compressor_family(r) == family for r in own)]
    return lines or [(None, own)]


def frontier_steps(frontier, mbs):
    """The step line of a frontier; it runs on to the largest config: with more memory, the best achievable stays
    the last frontier point."""
    return [(r["compressed_mb"], r["value"]) for r in frontier] + [(max(mbs), frontier[-1]["value"])]


def plot_speed(records, path, order=None):
    """The metric against fairseq-generate's decoding speed (tokens/s), one point per config with a speed,
    labelled with its config where there are few enough to read."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    records = [r for r in records if r.get("tokens_per_s")]
    sizes = models_by_size(records)
    colors = model_colors(plt, [name for name, _ in sizes], order)
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    for name, _ in sizes:
        for record in (r for r in records if r["model"] == name):
            ax.scatter(record["tokens_per_s"], record["value"], color=colors[name], s=28, zorder=3,
                       marker=METHOD_MARKERS[record["method"]])
            if len(records) <= 2 * MAX_FRONTIER_LABELS:
                ax.annotate(level_label(record), (record["tokens_per_s"], record["value"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=6, color=colors[name])
    metric = records[0]["metric"]
    ax.set_xlabel("decoding speed (fairseq-generate tokens/s)")
    ax.set_ylabel(f"{metric} ({'higher' if records[0]['higher_is_better'] else 'lower'} is better)")
    ax.set_title(f"{metric} vs decoding speed")
    ax.grid(alpha=0.3)
    ax.legend(handles=model_and_method_handles(Line2D, colors, sizes, records), fontsize=8, loc="best")
    save(plt, fig, path)


def model_and_method_handles(Line2D, colors, sizes, records):
    """Legend entries: one per model (its color, its size) and one per method present (its marker)."""
    methods = [m for m in METHOD_MARKERS if any(r["method"] == m for r in records)]
    handles = [Line2D([], [], color=colors[name], marker="o", linestyle="", label=f"{name} ({params_text(p)} params)")
               for name, p in sizes]
    return handles + [Line2D([], [], color="gray", marker=METHOD_MARKERS[m], linestyle="", label=m) for m in methods]


def save(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
