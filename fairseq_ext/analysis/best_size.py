"""Which models learned, and which size was best for this training budget on this machine.

A comparison between models that have not learned is about noise, so the report checks every model first: a
translation model learned when its uncompressed BLEU reaches MIN_SCORE["bleu"], a classifier when its accuracy
reaches MIN_SCORE["accuracy"]. Models that did not are named and left out of the verdicts.

The best size is the learned model with the best uncompressed score (else the best last validation). How the
answer moves on other hardware follows from two measured things: the cost of a step per size (train words/s) and
which model is best per update (the lowest validation value at the last update count every model reached). On a
GPU the cost of a step grows far more slowly with size than on a CPU, so the models make closer numbers of updates
in the same time and the best size moves towards the one that is best per update.
"""
from dataclasses import dataclass

from .convergence import higher_is_better
from .tables import markdown_table, number_text, params_text

# The least score of a model that has learned something: BLEU 10 is a rough but readable translation; 60% accuracy
# (fairseq logs percents) is well clear of SST-2's 51% majority class.
MIN_SCORE = {"bleu": 10.0, "accuracy": 60.0}


@dataclass(frozen=True)
class ModelCheck:
    name: str
    params: object
    score: object  # the uncompressed sweep score, or None
    metric: str
    learned: bool
    why: str


def dense_scores(records):
    """model -> its uncompressed (dense 32-bit) sweep record."""
    return {r["model"]: r for r in records if r["method"] == "dense"}


def check_models(runs, records, min_score=None):
    """One ModelCheck per model (training runs and swept models), smallest first; min_score replaces MIN_SCORE."""
    dense = dense_scores(records)
    params = {**{r.name: r.params for r in runs}, **{name: r["params"] for name, r in dense.items()}}
    checks = []
    for name in sorted(params, key=lambda n: (params[n] is None, params[n] or 0, n)):
        record = dense.get(name)
        if record is None:
            checks.append(ModelCheck(name, params[name], None, "-", True, "not swept: no score to check"))
            continue
        metric, score = record["metric"], record["value"]
        floor = MIN_SCORE.get(metric) if min_score is None else min_score
        if floor is None:
            checks.append(ModelCheck(name, params[name], score, metric, True, f"no floor known for {metric}"))
        elif score >= floor:
            checks.append(ModelCheck(name, params[name], score, metric, True,
                                     f"{metric} {number_text(score)} >= {number_text(floor)}"))
        else:
            checks.append(ModelCheck(name, params[name], score, metric, False,
                                     f"{metric} {number_text(score)} < {number_text(floor)}: has not learned"))
    return checks


def value_at(points, updates):
    """A curve's value at ``updates``, interpolated linearly between the validations around it."""
    before = [p for p in points if p[0] <= updates][-1]
    after = next((p for p in points if p[0] >= updates), before)
    if after[0] == before[0]:
        return before[1]
    return before[1] + (after[1] - before[1]) * (updates - before[0]) / (after[0] - before[0])


def best_per_update(runs, metric):
    """(model, updates): the run with the best validation value at the last update count every run reached (each
    curve interpolated there), or (None, None) with fewer than two curves."""
    curves = {r.name: [(v.updates, v.metrics[metric]) for v in r.log.validations if metric in v.metrics]
              for r in runs}
    curves = {name: points for name, points in curves.items() if points}
    if len(curves) < 2:
        return None, None
    common = min(points[-1][0] for points in curves.values())
    at = {name: value_at(points, common) for name, points in curves.items() if points[0][0] <= common}
    pick = max if higher_is_better(metric) else min
    return pick(at, key=at.get), common


def best_size_lines(runs, records, checks, metric="valid_loss"):
    """The verdict of claim 1 for this budget and machine, in a few lines of markdown."""
    learned = {c.name for c in checks if c.learned}
    runs = [r for r in runs if r.name in learned]
    if not runs:
        return ["No trained model learned: there is no best size to name."]
    dense = {name: r for name, r in dense_scores(records).items() if name in learned}
    if dense:
        first = next(iter(dense.values()))
        pick = max if first["higher_is_better"] else min
        best = pick(dense.values(), key=lambda r: r["value"])
        name, why = best["model"], f"uncompressed {best['metric']} {number_text(best['value'])}"
    else:
        last = {r.name: r.log.validations[-1].metrics.get(metric) for r in runs if r.log.validations}
        last = {n: v for n, v in last.items() if v is not None}
        if not last:
            return []
        name = (max if higher_is_better(metric) else min)(last, key=last.get)
        why = f"last {metric} {number_text(last[name])}"
    lines = [f"**Best size for this budget on this machine: {name}** ({why})."]
    per_update, updates = best_per_update(runs, metric)
    rates = {r.name: r.words_per_s()[0] for r in runs}
    rates = {n: v for n, v in rates.items() if v}
    by_size = sorted((r for r in runs if r.params and r.name in rates), key=lambda r: r.params)
    if per_update and len(by_size) > 1:
        small, large = by_size[0], by_size[-1]
        lines.append(
            f"Per update the best was {per_update} (lowest {metric} at update {updates}, the last every model "
            f"reached, each curve interpolated between its validations). Here a step of {large.name} cost {number_text(rates[small.name] / rates[large.name], 3)}x "
            f"one of {small.name} ({number_text(rates[large.name], 4)} vs {number_text(rates[small.name], 4)} "
            f"train words/s) for {number_text(large.params / small.params, 3)}x the parameters "
            f"({params_text(large.params)} vs {params_text(small.params)}). On a GPU, where the cost of a step "
            f"grows far more slowly with size, every model makes nearly as many updates as the smallest, so the "
            f"best size moves {towards(per_update, name, by_size)}.")
    return lines


def towards(per_update, best, by_size):
    order = [r.name for r in by_size]
    if per_update not in order or best not in order or order.index(per_update) <= order.index(best):
        return f"little from {best} (it is also as good per update as any larger model)"
    return f"up from {best} towards {per_update}" + (" or beyond (the largest size swept)"
                                                     if per_update == order[-1] else "")


def learned_markdown(checks):
    rows = [{"model": c.name, "params": params_text(c.params), "score": c.score,
             "learned": "yes" if c.learned else "**no**", "why": c.why} for c in checks]
    return markdown_table(rows, ["model", "params", "score", "learned", "why"],
                          ["model", "params", "uncompressed score", "learned", "check"])
