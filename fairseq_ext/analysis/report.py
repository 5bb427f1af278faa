"""`analyze.py report`: everything about one run folder in OUT/report/ (report.md, plots, CSV and JSON).

The run folder is what the recipes leave: OUT/train/<name>/train.log (+ meta.json) per model and OUT/sweep.jsonl
(with OUT/hyps/, the translations the significance tests read). The text states only what the numbers show: which
model was best under each memory budget, with the best uncompressed model that fits beside it, per compressor family
where the sweep has calibrated configs, and whether each difference it draws a verdict from is significant
(significance.py).
"""
from dataclasses import replace
from pathlib import Path

from . import AnalysisError
from .best_size import best_size_lines, check_models, learned_markdown
from .control import (control_markdown, control_rows, control_verdict, pretrained_seeds,
                      what_the_frontier_shows)
from .convergence_files import write_convergence
from .families import family_budget_rows, family_verdict, size_line, size_rows, size_verdict
from .frontier import pareto_frontier
from .frontier_files import frontier_markdown, has_families, write_frontier
from .plots import PlottingUnavailable, plot_speed
from .runtime_memory import runtime_section
from .selection import describe, select
from .significance import ALPHA, TESTS, SignificanceTests, difference_text
from .sweep_results import FAMILIES, compressor_family, level_label, models_by_size, read_sweep
from .tables import markdown_table, number_text, params_text, write_json
from .training_run import read_training_runs, size_order

MAX_BUDGETS = 6  # enough to show where the answer changes, few enough to read


def write_report(run, out=None, metric="valid_loss", target=None, min_score=None):
    """min_score: the uncompressed score a model must reach to count as learned (default: best_size.MIN_SCORE)."""
    run = Path(run)
    out = Path(out) if out else run / "report"
    logs = sorted(run.glob("train/*/train.log"))
    sweep = run / "sweep.jsonl"
    if not logs and not sweep.is_file():
        raise AnalysisError(f"--run {run}: found neither train/*/train.log nor sweep.jsonl in it")
    out.mkdir(parents=True, exist_ok=True)
    records = read_sweep(sweep, option="--run") if sweep.is_file() else []
    sweep_params = dict(models_by_size(records))
    # A run without meta.json still has a size where the sweep measured its checkpoint.
    runs = sorted((replace(run, params=run.params or sweep_params.get(run.name))
                   for run in (read_training_runs(logs) if logs else [])), key=size_order)
    order = model_order(runs, sweep_params)
    # The recipes score each model on the whole test set apart from the sweep (RUN/scores/), which may use a part.
    scores_file = run / "scores" / "sweep.jsonl"
    scores = read_sweep(scores_file, option="--run") if scores_file.is_file() else records
    checks = check_models(runs, scores, min_score)
    learned = {c.name for c in checks if c.learned}
    scored_on = ("the test set, scored apart from the sweep (`scores/sweep.jsonl`)" if scores is not records
                 else "the sweep's test set")
    sections = [f"# Train Large, Then Compress: report on `{run}`", regime_section(runs, records),
                learned_section(checks, scored_on)]
    problems = []
    if runs:
        convergence = write_convergence(runs, metric, target, out, order, target_models=learned)
        best = best_size_lines(runs, scores, checks, metric)
        write_json(out / "best_size.json", {"lines": best, "learned": [c.name for c in checks if c.learned],
                                            "not_learned": [c.name for c in checks if not c.learned]})
        sections.append(convergence_section(convergence, out) + "\n\n" + "\n\n".join(best))
        problems.append(convergence.plot_problem)
    else:
        sections.append("## Convergence\n\nNo training logs (`train/*/train.log`) in the run folder.")
    learned_records = [r for r in records if r["model"] in learned]
    control = control_section(run, out, runs)
    if control:
        sections.append(control)
    if records:
        frontier = write_frontier(records, out, order)
        sections.append(frontier_section(frontier, out))
    if learned_records:
        tests = SignificanceTests(sweep)
        left_out = sorted(set(sweep_params) - learned)
        sizes = size_rows(learned_records, budget_sizes(pareto_frontier(learned_records)), tests)
        budgets = budget_rows(learned_records, sizes, tests)
        write_json(out / "budgets.json", budgets)
        verdict = size_verdict(sizes)
        write_json(out / "sizes.json", {"rows": sizes, "lines": [size_line(row) for row in sizes],
                                        "verdict": verdict})
        sections.append(budget_section(budgets, learned_records, left_out))
        sections.append(size_section(sizes, verdict, learned_records))
        if has_families(learned_records):
            rows = family_budget_rows(learned_records, [row["budget_mb"] for row in budgets], tests)
            verdict = family_verdict(rows)
            write_json(out / "families.json", {"rows": rows, "verdict": verdict})
            sections.append(family_section(rows, verdict, learned_records, left_out))
    elif records:
        sections.append("## Which model under a memory budget\n\nNo swept model learned (see above): no verdict.")
    if records:
        problems.append(frontier.plot_problem)
        if any(r.get("tokens_per_s") for r in records):
            speed, problem = speed_section(records, out, order)
            sections.append(speed)
            problems.append(problem)
        runtime, problem = runtime_section(records, out, order)
        if runtime:
            sections.append(runtime)
            problems.append(problem)
    else:
        sections.append("## Compression\n\nNo compression sweep (`sweep.jsonl`) in the run folder.")
    problem = next((p for p in problems if p), None)
    if problem:
        sections.append(f"**No plots:** {problem}.")
    report = out / "report.md"
    report.write_text("\n\n".join(sections) + "\n")
    return report, problem


def model_order(runs, sweep_params):
    """Every model of the report, smallest first: its place picks its color in every plot."""
    sizes = {**{run.name: run.params for run in runs}, **sweep_params}
    return sorted(sizes, key=lambda name: (sizes[name] is None, sizes[name] or 0, name))


def regime_section(runs, records):
    devices = sorted({str(r.meta["device"]) for r in runs if r.meta.get("device")})
    lines = ["## Regime", ""]
    lines.append(f"Device: {', '.join(devices)}." if devices else
                 "Device: not recorded (no `device` in any `meta.json`).")
    if runs:
        rows = []
        for r in runs:
            rate, source = r.words_per_s()
            last = r.log.validations[-1] if r.log.validations else None
            rows.append({"model": r.name, "arch": r.meta.get("arch", "?"),
                         "params": params_text(r.params),
                         "words_per_s": rate, "source": source,
                         "updates": last.updates if last else None,
                         "hours": last.wall_s / 3600 if last else None})
        lines += ["", markdown_table(rows, ["model", "arch", "params", "words_per_s", "source", "updates", "hours"],
                                     ["model", "arch", "params", "train words/s", "words/s from",
                                      "updates (last validation)", "wall-clock hours there"])]
    if records:
        seconds = sum(r["seconds"] for r in records)
        lines += ["", f"Compression sweep: {len(records)} evaluations of {len(models_by_size(records))} models on the "
                      f"`{records[0]['subset']}` subset, metric {records[0]['metric']}, "
                      f"{number_text(seconds / 60)} minutes of evaluation."]
    return "\n".join(lines)


def learned_section(checks, scored_on):
    failed = [c.name for c in checks if not c.learned]
    lines = ["## Did every model learn?", "",
             f"A comparison is only as good as its models: each is checked before any verdict is drawn, by its "
             f"uncompressed score on {scored_on}.", "",
             learned_markdown(checks), ""]
    lines.append(f"Left out of the verdicts below: {', '.join(failed)}." if failed else
                 "Every model learned: all of them take part in the verdicts below.")
    return "\n".join(lines)


def control_section(run, out, runs):
    """Fine-tuned from pretraining vs from random weights (the recipes' RUN/finetune*/ and RUN/scratch*/ folders),
    each over its seeds; control.json holds the numbers. The recipe gives the seeds to the size whose pretraining
    ended lowest (runs: the pretraining runs), which the section names first."""
    rows = control_rows(run)
    if not rows:
        return None
    lines = ["## What pretraining added", ""]
    ends = {r.name: r.log.validations[-1].metrics for r in runs if r.log.validations}
    ends = {name: metrics for name, metrics in ends.items() if "valid_loss" in metrics}
    if ends:
        best = min(ends, key=lambda name: ends[name]["valid_loss"])
        entropy = next((r.meta["unigram_entropy"] for r in runs if r.meta.get("unigram_entropy")), None)
        lines += [f"Best pretraining size for this budget: **{best}**, the lowest masked-LM validation loss at the end "
                  f"of the same wall-clock budget:", "", *[f"- {name}: {pretraining_end(metrics, entropy)}"
                                                           for name, metrics in ends.items()]]
        if entropy:
            lines += ["", f"The unigram entropy of the pretraining text under its BPE is {entropy:.2f} bits per "
                          f"token: the text loss of a model that knows word frequencies and nothing of context."]
        lines.append("")
    every_size = pretrained_seeds(run)
    if every_size:
        lines += ["Every size fine-tuned from its pretraining, dev accuracy (%) at the end of fine-tuning over its "
                  "seeds:", "", "| model | pretrained, then fine-tuned |", "|---|---|",
                  *[f"| {name} | {values.text()} |" for name, values in every_size.items()], ""]
    write_json(out / "control.json", [{"model": row["model"], "pretrained": list(row["pretrained"].values),
                                       "scratch": list(row["scratch"].values), "gain": row["gain"],
                                       "beyond_spread": row["beyond_spread"], "verdict": control_verdict(row)}
                                      for row in rows])
    lines += ["The same fine-tuning (data, settings, epochs) from the pretrained checkpoint and from random weights, "
              "with each seed: dev accuracy (%) at the end of fine-tuning, mean +- standard deviation over the seeds "
              "(their range in brackets). The gain is larger than the spread when every pretrained seed beats every "
              "control seed.", "", control_markdown(rows), "", *[control_verdict(row) for row in rows], "",
              what_the_frontier_shows(rows)]
    return "\n".join(lines)


def pretraining_end(metrics, entropy=None):
    """"valid_loss 5.1 bits (masked text tokens: 6.2 bits, 2.1 below the unigram entropy, 35% predicted right)" from
    a masked LM's last validation."""
    text = f"valid_loss {number_text(metrics['valid_loss'])} bits"
    if "valid_text_loss" in metrics:
        text += f" (masked text tokens: {number_text(metrics['valid_text_loss'])} bits"
        if entropy:
            text += f", {entropy - metrics['valid_text_loss']:.2f} below the unigram entropy"
        if "valid_text_accuracy" in metrics:
            text += f", {number_text(metrics['valid_text_accuracy'])}% predicted right"
        text += ")"
    elif "valid_accuracy" in metrics:
        text += f", {number_text(metrics['valid_accuracy'])}% of masked tokens predicted right"
    return text


def convergence_section(files, out):
    metric, target = files.curves[0].metric, files.target
    how = "the best value every run reached" if files.target_is_default else "given with --target"
    lines = ["## Convergence", "",
             f"Validation {metric} at every logged validation, against wall-clock time and against updates "
             f"(wall-clock includes validation; fairseq logs it to the second)."]
    lines += ["", *[f"![{p.stem}]({p.relative_to(out)})" for p in files.plots]]
    lines += ["", f"Time to {metric} {number_text(target)} ({how}):", "", files.markdown()]
    reached = [row for row in files.rows if row["reached"]]
    if len(files.rows) > 1 and reached:
        lines += ["", f"First there in wall-clock: {first_to_target(reached, 'wall_hours', 'h')}; "
                      f"in updates: {first_to_target(reached, 'updates', 'updates')}. "
                      f"Resolution is one validation interval."]
    elif not reached:
        lines += ["", "No run reached the target."]
    return "\n".join(lines)


def first_to_target(rows, column, unit):
    """The run(s) that got there first by one measure; several when they tie (fairseq logs whole seconds)."""
    first = min(row[column] for row in rows)
    names = [f"**{row['model']}**" for row in rows if row[column] == first]
    return f"{' and '.join(names)} ({number_text(first)} {unit}{', a tie' if len(names) > 1 else ''})"


def frontier_section(files, out):
    families = any(view.name in FAMILIES for view in files.views)
    lines = ["## Compression frontier", "",
             "Every evaluated config (color: model, marker: method" + ("; hollow: a calibrated compressor" if families
                                                                      else "")
             + "); the dashed step line is the Pareto frontier (no other config is both smaller and better)."
             + (" The plot of every config also draws each compressor family's own frontier; each family has its "
                "view below." if families else "")]
    for view in files.views:
        lines += ["", f"### {view.description[0].upper()}{view.description[1:]}", ""]
        if view.plot:
            lines += [f"![{view.plot.stem}]({view.plot.relative_to(out)})", ""]
        lines += [frontier_markdown(view), "", f"All points: [{view.table.name}]({view.table.relative_to(out)})"]
    return "\n".join(lines)


def budget_sizes(frontier):
    """The memory budgets the report asks about: the sizes of the frontier's points, at most MAX_BUDGETS of them,
    evenly spread."""
    sizes = sorted({r["compressed_mb"] for r in frontier})
    if len(sizes) > MAX_BUDGETS:
        step = (len(sizes) - 1) / (MAX_BUDGETS - 1)
        sizes = [sizes[round(i * step)] for i in range(MAX_BUDGETS)]
    return sizes


def budget_rows(records, size_duels, tests):
    """The best config under each budget of size_duels (size_rows: the winner and the best config of another size
    under each); tests (SignificanceTests) say whether its lead over the best uncompressed model that fits is
    significant."""
    rows = []
    for duel in size_duels:
        budget = duel["budget_mb"]
        selection = select(records, budget)
        best, dense = selection.best, selection.best_dense
        difference = tests.compare(best, dense) if dense and dense is not best else None
        rows.append({
            "budget_mb": budget,
            "model": best["model"],
            "params": best["params"],
            "compression": level_label(best),
            "value": best["value"],
            "kind": size_kind(best, duel["other_params"]),
            "dense_model": dense["model"] if dense else "none fits",
            "dense_value": dense["value"] if dense else None,
            # How much better the best config is than the best dense model that fits (never negative: the best
            # ranks first); None where no dense model fits or the best is that dense model.
            "margin": abs(best["value"] - dense["value"]) if dense and dense is not best else None,
            "p_value": difference.p_value if difference else None,
            "difference": difference_text(difference) if dense and dense is not best else "-",
            "answer": describe(selection, tests),
        })
    return rows


def size_kind(record, other_params):
    """"larger model, compressed", "smaller model, uncompressed", ...: the best config against the best config of
    another size that fits (other_params; None where no other size fits), what the paper's claim is about."""
    if other_params is None:
        size = "the only size that fits"
    else:
        size = "larger model" if record["params"] > other_params else "smaller model"
    return f"{size}, {'uncompressed' if record['method'] == 'dense' else 'compressed'}"


def budget_section(rows, records, left_out=()):
    metric = records[0]["metric"]
    among = f" Among the models that learned (not {', '.join(left_out)})." if left_out else ""
    lines = ["## Which model under a memory budget", "",
             "For each budget (the compressed sizes of the frontier's points): the best config that fits (ties go to "
             "the smaller config), and the best uncompressed (dense 32-bit) model that fits, the paper's comparison."
             + among,
             "",
             markdown_table(rows, ["budget_mb", "model", "params", "compression", "value", "kind", "dense_model",
                                   "dense_value", "margin", "difference"],
                            ["budget MB", "best model", "params", "compression", metric, "which kind",
                             "best dense that fits", f"its {metric}", "margin", "margin significant?"])]
    kinds = {}
    for row in rows:
        kinds.setdefault(row["kind"], []).append(number_text(row["budget_mb"]))
    lines += ["", "The best model under each budget was:"]
    lines += [f"- {kind}: under {len(budgets)} of {len(rows)} budgets ({', '.join(budgets)} MB)"
              for kind, budgets in kinds.items()]
    if all(row["dense_value"] is None for row in rows):
        lines += ["", "No uncompressed model fits under any of these budgets: there is no dense model to compare "
                      "the compressed ones with here. The next section asks the paper's question: larger model or "
                      "smaller one, both compressed."]
    ties = [number_text(row["budget_mb"]) for row in rows if row["margin"] == 0]
    if ties:
        lines += ["", f"Under {', '.join(ties)} MB the best config only ties the best uncompressed model that fits "
                      f"(margin 0; ties go to the smaller config): compression bought nothing measurable there."]
    lines += ["", significance_note(metric)]
    return "\n".join(lines)


def size_section(rows, verdict, records):
    """The paper's question under each budget, every compressor together: does the best config of the larger
    model beat the best config of any smaller one that fits?"""
    metric = records[0]["metric"]
    lines = ["## Train large, then compress? The larger model against the smaller one under each budget", "",
             "Under each budget above: the best config that fits and the best config of any other size that fits "
             "(every compressor), and whether the winner's lead is significant.", "",
             markdown_table([{**row, "larger_wins": {True: "yes", False: "no", None: "-"}[row["larger_wins"]]}
                             for row in rows],
                            ["budget_mb", "model", "compression", "value", "other_model", "other_compression",
                             "other_value", "difference", "larger_wins"],
                            ["budget MB", "best model", "compression", metric, "best other size",
                             "its compression", f"its {metric}", "lead significant?", "larger model wins?"]),
             "", f"**{verdict}**", "", "Significance as above."]
    return "\n".join(lines)


def significance_note(metric):
    """How the report's differences were tested, for a metric; and what no test can say."""
    test = (f"Significance: {TESTS[metric]}; \"not significant\" where p >= {ALPHA}." if metric in TESTS
            else f"The differences in {metric} are not tested for significance (no test for this metric).")
    return (test + " Each config was evaluated once (one checkpoint per size, one seed): a test says whether the "
                   "test set tells two configs apart, not whether another training run would.")


def family_section(rows, verdict, records, left_out=()):
    """Per memory budget and compressor family: the winner, the best model of another size, and the verdict."""
    metric = records[0]["metric"]
    among = f" Among the models that learned (not {', '.join(left_out)})." if left_out else ""
    counts = {family: len({level_label(r) for r in records if compressor_family(r) == family}) for family in FAMILIES}
    lines = ["## Which model under a memory budget, per compressor family", "",
             "The same budgets, each family on its own (dense models belong to both): "
             + "; ".join(f"**{family}**: {description}, {counts[family]} compressed configs per model"
                         for family, description in FAMILIES.items())
             + ". For each: the best config that fits, the best config of any other model that fits, and whether "
               "the winner's lead over it is significant." + among,
             "",
             markdown_table([{**row, "larger_wins": {True: "yes", False: "no", None: "-"}[row["larger_wins"]]}
                             for row in rows],
                            ["budget_mb", "family", "model", "compression", "value", "other_model",
                             "other_compression", "other_value", "difference", "larger_wins"],
                            ["budget MB", "compressors", "best model", "compression", metric, "best other size",
                             "its compression", f"its {metric}", "lead significant?", "larger model wins?"]),
             "", f"**{verdict}**", "", "Significance as above."]
    return "\n".join(lines)


def speed_rows(records):
    """Per model, smallest first, every config with a measured speed, fastest first, with its speed-up over that
    model's dense config."""
    rows = []
    for name, params in models_by_size(records):
        own = [r for r in records if r["model"] == name and r.get("tokens_per_s")]
        dense = next((r for r in own if r["method"] == "dense"), None)
        for r in sorted(own, key=lambda r: -r["tokens_per_s"]):
            rows.append({"model": name, "params": params_text(params), "compression": level_label(r),
                         "value": r["value"], "tokens_per_s": r["tokens_per_s"], "latency_ms": r.get("latency_ms"),
                         "speedup": r["tokens_per_s"] / dense["tokens_per_s"] if dense else None,
                         "compressed_mb": r["compressed_mb"]})
    return rows


def speed_section(records, out, order):
    """The metric against decoding speed: what structured pruning and int8 kernels buy, and cost."""
    metric = records[0]["metric"]
    rows = speed_rows(records)
    write_json(out / "speed.json", rows)
    lines = ["## Decoding speed", "",
             "fairseq-generate's own decoding speed (generation time only: no start-up, no checkpoint loading) of "
             "every config, measured once inside the sweep, which may run several evaluations side by side: read "
             "the speed-ups as indications and measure them with `scripts/bench_generate.py` (alternated runs, "
             "ratios). Memory of structured and int8 configs is that of the weights as they run.", ""]
    problem = None
    try:
        plot_speed(records, out / "speed.png", order)
        lines += ["![speed](speed.png)", ""]
    except PlottingUnavailable as error:
        problem = str(error)
    lines.append(markdown_table(rows, ["model", "params", "compression", "value", "tokens_per_s", "speedup",
                                       "latency_ms", "compressed_mb"],
                                ["model", "params", "compression", metric, "tokens/s", "x dense", "ms/sentence",
                                 "MB"]))
    return "\n".join(lines), problem
