"""The study re-asked per compressor family: under each memory budget, which model wins with the paper's
compressors (magnitude pruning, round-to-nearest quantization) and which with the calibrated ones (SparseGPT or
Wanda, GPTQ); dense models belong to both families.

"Train large, then compress" holds under a budget when the winner (the best config that fits) is a larger model
than the best config of any other model that fits: a compressed large model beats a smaller one at the same
memory. Each winner's lead over that model is tested (significance.py); the verdict counts, per family, the
budgets where the claim holds significantly and says whether it holds more often, less often or as often with
the calibrated compressors.
"""
from .frontier import family_records
from .selection import rank
from .significance import ALPHA, difference_text
from .sweep_results import FAMILIES, level_label
from .tables import number_text


def size_duel(fitting, tests):
    """The best config among fitting (the winner), the best config of any other model among them, and the test
    between the two: the paper's question under one budget."""
    winner = min(fitting, key=rank, default=None)
    other = min((r for r in fitting if r["model"] != winner["model"]), key=rank, default=None) if winner else None
    difference = tests.compare(winner, other) if other else None
    return {
        "model": winner["model"] if winner else "nothing fits",
        "params": winner["params"] if winner else None,
        "compression": level_label(winner) if winner else None,
        "value": winner["value"] if winner else None,
        "other_model": other["model"] if other else "none fits",
        "other_params": other["params"] if other else None,
        "other_compression": level_label(other) if other else None,
        "other_value": other["value"] if other else None,
        "p_value": difference.p_value if difference else None,
        "significant": difference.significant if difference else None,
        "difference": difference_text(difference) if other else "-",
        # None where there is no other model to beat.
        "larger_wins": winner["params"] > other["params"] if other else None,
    }


def family_budget_rows(records, budgets, tests):
    """Per budget and family: the winner, the best config of another model that fits, and the test between them."""
    return [{"budget_mb": budget, "family": family,
             **size_duel([r for r in family_records(records, family) if r["compressed_mb"] <= budget], tests)}
            for budget in budgets for family in FAMILIES]


def size_rows(records, budgets, tests):
    """Per budget, every compressor together: the winner, the best config of another model that fits, the test."""
    return [{"budget_mb": budget, **size_duel([r for r in records if r["compressed_mb"] <= budget], tests)}
            for budget in budgets]


def size_line(row):
    """One budget's answer to the paper's question, in a line."""
    budget = f"{number_text(row['budget_mb'])} MB"
    if row["larger_wins"] is None:
        return f"{budget}: only {row['model']} fits" if row["params"] else f"{budget}: nothing fits"
    winner = f"{row['model']} {row['compression']} {number_text(row['value'])}"
    other = f"{row['other_model']} {row['other_compression']} {number_text(row['other_value'])}"
    who = "the larger model wins" if row["larger_wins"] else "the smaller model wins"
    difference = row["difference"]  # "p = 0.012", "not significant (p = 0.31)" or "not tested"
    return f"{budget}: {winner} against {other}: {who}" + (
        f" ({difference})" if difference.startswith("p ") else f", {difference}")


def size_verdict(rows):
    """The paper's question over the budgets, in one sentence: under how many budgets where two sizes fit does the
    larger model, compressed, beat the smaller one, and how many of those leads are significant."""
    compared = [row for row in rows if row["larger_wins"] is not None]
    if not compared:
        return ("Train large, then compress? No budget fits models of two sizes: there is nothing to compare.")
    larger = [row for row in compared if row["larger_wins"]]
    tested = all(row["p_value"] is not None for row in compared)
    significant = sum(bool(row["significant"]) for row in larger)
    how = (f", significantly (p < {ALPHA}) under {significant}" if tested
           else " (the differences are not tested for this metric)")
    return (f"Train large, then compress? The larger model, compressed, beats the best smaller one under "
            f"{len(larger)} of {len(compared)} budgets where two sizes fit{how}; the smaller model wins under "
            f"{len(compared) - len(larger)}.")


def family_verdict(rows):
    """One sentence from the rows: does "train large, then compress" hold more often, less often or as often with
    the calibrated compressors as with the paper's? Counted over the budgets where both families have models of
    two sizes to compare."""
    by_budget = {}
    for row in rows:
        by_budget.setdefault(row["budget_mb"], {})[row["family"]] = row
    compared = [families for families in by_budget.values()
                if all(families[family]["larger_wins"] is not None for family in FAMILIES)]
    if not compared:
        return ("No budget fits models of two sizes in both compressor families: there is nothing to say about "
                "whether the calibrated compressors change the answer.")
    tested = all(families[family]["p_value"] is not None for families in compared for family in FAMILIES)

    def holds(row):
        return row["larger_wins"] and (row["significant"] or not tested)

    paper, calibrated = (sum(holds(families[family]) for families in compared) for family in ("paper", "calibrated"))
    how = ("more often than" if calibrated > paper else "less often than" if calibrated < paper else "as often as")
    what = (f"the larger model wins significantly (p < {ALPHA})" if tested
            else "the larger model wins (the differences are not tested for this metric)")
    return (f"With the calibrated compressors, \"train large, then compress\" holds {how} with the paper's: {what} "
            f"under {calibrated} of {len(compared)} budgets with the calibrated compressors and {paper} of "
            f"{len(compared)} with the paper's (budgets where both families fit models of two sizes).")
