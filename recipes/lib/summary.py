#!/usr/bin/env python
"""Print a recipe's results in a few lines: per size, its rate and scores; per memory budget, the winner.

    summary.py OUT

Reads what the recipe and `analyze.py report` left in OUT: train/*/meta.json, sweep.jsonl, report/budgets.json,
report/control.json, report/families.json, report/sizes.json.
"""
import json
import sys
from pathlib import Path


def number(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) < 10 ** digits:
        return f"{value:.{digits}g}"
    return f"{round(value):,}"


def table(rows, header):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return ["  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]


def json_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(out):
    out = Path(out)
    metas = [json.loads(p.read_text()) for p in sorted(out.glob("train/*/meta.json"))]
    metas.sort(key=lambda m: m.get("params") or 0)
    records = json_lines(out / "sweep.jsonl")
    dense = {r["model"]: r for r in records if r["method"] == "dense"}
    # Each model on every test sentence, where the recipe scored it apart from the sweep.
    scores_file = out / "scores" / "sweep.jsonl"
    scores = {r["model"]: r for r in json_lines(scores_file)} if scores_file.is_file() else {}
    metric = records[0]["metric"] if records else "score"
    lines = [f"device: {metas[0]['device']}" if metas else "no trained models"]
    rows = [[m["name"], f"{m['params'] / 1e6:.1f}M" if m.get("params") else "-", number(m.get("words_per_s")),
             m.get("updates", "-"), f"{number(m.get('first_valid_loss'))} -> {number(m.get('valid_loss'))}",
             number(dense[m["name"]]["value"]) if m["name"] in dense else "-"]
            + ([number(scores[m["name"]]["value"]) if m["name"] in scores else "-"] if scores else []) for m in metas]
    header = ["model", "params", "train words/s", "updates", "valid loss (first -> last)",
              f"{metric} (uncompressed, sweep)"] + ([f"{metric}, whole test set"] if scores else [])
    if any("valid_text_loss" in m for m in metas):  # a masked LM: its loss and accuracy on the masked text tokens
        header += ["masked text tokens: loss (first -> last), % right"]
        for row, m in zip(rows, metas):
            row.append(f"{number(m.get('first_valid_text_loss'))} -> {number(m.get('valid_text_loss'))}, "
                       f"{number(m.get('valid_text_accuracy'))}")
    lines += table(rows, header)
    entropy = next((m["unigram_entropy"] for m in metas if m.get("unigram_entropy")), None)
    if entropy:
        lines.append(f"unigram entropy of the pretraining text: {entropy:.2f} bits per token")
    best_size = out / "report" / "best_size.json"
    if best_size.is_file():
        verdict = json.loads(best_size.read_text())
        if verdict["not_learned"]:
            lines.append(f"NOT LEARNED (left out of the verdicts): {', '.join(verdict['not_learned'])}")
        lines += [line.replace("**", "") for line in verdict["lines"]]
    control_file = out / "report" / "control.json"
    if control_file.is_file():
        lines += [f"control: {row['verdict']}" for row in json.loads(control_file.read_text())]
    budgets_file = out / "report" / "budgets.json"
    if budgets_file.is_file():
        budgets = json.loads(budgets_file.read_text())
        lines.append("best under each memory budget:")
        lines += [f"  {row['answer']}" for row in budgets]
    families_file = out / "report" / "families.json"
    if families_file.is_file():  # the sweep had calibrated compressors beside the paper's
        lines.append(json.loads(families_file.read_text())["verdict"])
    sizes_file = out / "report" / "sizes.json"
    if sizes_file.is_file():  # the paper's question closes the summary
        sizes = json.loads(sizes_file.read_text())
        lines.append("the larger model against the smaller one under each budget (every compressor):")
        lines += [f"  {line}" for line in sizes["lines"]]
        lines.append(sizes["verdict"])
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip())
    main(sys.argv[1])
