"""The frontier in the memory the weights take as they run, beside the frontier in accounted (packed) bytes.

A sweep record's compressed_mb is what the packed file holds. Its runtime_mb is what the decoding process held:
float32 weights on the grid for a simulated config (the accounted saving is not realised), the codes themselves for
a config run on int4 kernels (sweep.py --int4-kernels), int8 codes for --int8-kernels. The two frontiers agree where
the configs run on kernels; this section says where they do not, config by config.
"""
from .frontier import pareto_frontier
from .plots import PlottingUnavailable, plot_frontier
from .sweep_results import level_label
from .tables import markdown_table, number_text, write_csv

# A config whose weights take more than this times its accounted bytes at run time is one the runtime frontier
# does not see where the accounted one does (1.15: the bf16 scales and float tables that kernels add stay below it
# on the models of this project; a simulated config is at 4-16x).
RUNTIME_SLACK = 1.15


def runtime_records(records):
    """The records that measured their runtime memory, with it as their memory (compressed_mb) and the accounted
    bytes kept as accounted_mb."""
    return [{**r, "accounted_mb": r["compressed_mb"], "compressed_mb": r["runtime_mb"]}
            for r in records if r.get("runtime_mb") is not None]


def runtime_rows(records):
    """Per config on either frontier, smallest accounted first: both memories, their ratio, the peak RSS."""
    at_runtime = runtime_records(records)
    accounted = {id(r) for r in pareto_frontier([r for r in records if r.get("runtime_mb") is not None])}
    runtime = {(r["model"], r["checkpoint"], level_label(r)) for r in pareto_frontier(at_runtime)}
    rows = []
    for record, shown in zip((r for r in records if r.get("runtime_mb") is not None), at_runtime):
        key = (record["model"], record["checkpoint"], level_label(record))
        if id(record) not in accounted and key not in runtime:
            continue
        rows.append({"model": record["model"], "compression": level_label(record), "value": record["value"],
                     "accounted_mb": record["compressed_mb"], "runtime_mb": shown["compressed_mb"],
                     "ratio": shown["compressed_mb"] / record["compressed_mb"],
                     "peak_rss_mb": record.get("peak_rss_mb"),
                     "frontiers": " + ".join(name for name, on in (("accounted", id(record) in accounted),
                                                                   ("runtime", key in runtime)) if on)})
    return sorted(rows, key=lambda row: (row["accounted_mb"], row["model"]))


def runtime_section(records, out, order=None):
    """The report's section, or None when no record measured its runtime memory (sweeps of earlier versions);
    and why there is no plot (None if there is one)."""
    at_runtime = runtime_records(records)
    if not at_runtime:
        return None, None
    metric = records[0]["metric"]
    rows = runtime_rows(records)
    write_csv(out / "frontier_runtime.csv", rows, list(rows[0]) if rows else ["model"])
    unrealised = [row for row in rows if "accounted" in row["frontiers"] and row["ratio"] > RUNTIME_SLACK]
    kernels = sum(1 for r in records if r.get("int4") or r.get("int8"))
    lines = ["## Memory at run time", "",
             "The frontier above counts the packed file's bytes. Below, the same configs at the memory their weights "
             "took while fairseq decoded them (every distinct tensor, as the `compressed` line's `runtime_mb`): a "
             "simulated config holds float32 weights on its grid, one run on kernels (`sweep.py --int4-kernels`, "
             "`--int8-kernels`) holds its codes. "
             + (f"{kernels} of the {len(records)} configs ran on kernels." if kernels else
                "No config of this sweep ran on kernels: every saving below is the packed file's, not the "
                "decoder's (run the sweep with `--int4-kernels` to measure them running 4-bit)."), ""]
    problem = None
    try:
        plot_frontier(at_runtime, pareto_frontier(at_runtime), out / "frontier_runtime.png",
                      f"{metric} vs memory at run time", order=order, xlabel="weights at run time (MB)")
        lines += ["![frontier_runtime](frontier_runtime.png)", ""]
    except PlottingUnavailable as error:
        problem = str(error)
    lines.append(markdown_table(rows, ["model", "compression", "value", "accounted_mb", "runtime_mb", "ratio",
                                       "peak_rss_mb", "frontiers"],
                                ["model", "compression", metric, "accounted MB", "runtime MB", "x accounted",
                                 "peak RSS MB", "on the frontier of"]))
    if unrealised:
        lines += ["", f"Where the two differ: {len(unrealised)} point(s) of the accounted frontier take more than "
                      f"{RUNTIME_SLACK}x their bytes at run time: "
                  + "; ".join(f"{row['model']} {row['compression']} ({number_text(row['accounted_mb'])} MB packed, "
                              f"{number_text(row['runtime_mb'])} MB running)" for row in unrealised) + "."]
    else:
        lines += ["", f"Every point of the accounted frontier runs within {RUNTIME_SLACK}x its bytes."]
    return "\n".join(lines), problem
