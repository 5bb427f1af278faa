"""fairseq_ext.analysis on generated inputs: the frontier, selection and log-reading properties, for any data."""
import json
import math
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clitools import REPO
from fairseq_ext.analysis import AnalysisError
from fairseq_ext.analysis.frontier import dominates, pareto_frontier
from fairseq_ext.analysis.selection import describe, select
from fairseq_ext.analysis.fairseq_output import generation_speed
from fairseq_ext.analysis.sweep_results import FIELDS, check_record, config_key, level_label, method_of, record_method
from fairseq_ext.analysis.training_log import read_training_log, wall_at

MODEL_PARAMS = {"small": 1_000, "base": 5_000, "big": 20_000}


@st.composite
def sweeps(draw, min_size=1):
    """Sweep records with one metric direction; memory and values on a coarse grid, so that ties are common."""
    higher = draw(st.booleans())

    @st.composite
    def record(draw):
        model = draw(st.sampled_from(sorted(MODEL_PARAMS)))
        sparsity = draw(st.sampled_from([0.0, 0.5, 0.9]))
        bits = draw(st.sampled_from([32, 8, 4]))
        return {
            "model": model, "checkpoint": f"{model}.pt", "params": MODEL_PARAMS[model],
            "method": method_of(sparsity, bits), "sparsity": sparsity, "bits": bits,
            "compressed_mb": float(draw(st.integers(1, 12))), "fp32_mb": 12.0,
            "metric": "bleu" if higher else "loss", "value": float(draw(st.integers(0, 8))),
            "higher_is_better": higher, "subset": "test", "seconds": 1.0,
        }

    return draw(st.lists(record(), min_size=min_size, max_size=25))


def quality(record):
    """Higher is better, whatever the metric's direction."""
    return record["value"] if record["higher_is_better"] else -record["value"]


def frontier_by_sweep_line(records):
    """The test's own frontier (ids of the records on it), by another route than the module's pairwise definition:
    walk the memory levels smallest first; a level's best records are on the frontier when they beat everything
    smaller, ties included."""
    on, best_smaller = set(), -math.inf
    for mb in sorted({r["compressed_mb"] for r in records}):
        level = [r for r in records if r["compressed_mb"] == mb]
        best = max(quality(r) for r in level)
        if best > best_smaller:
            on |= {id(r) for r in level if quality(r) == best}
        best_smaller = max(best_smaller, best)
    return on


def beats(a, b):
    """a is no bigger and no worse than b, and differs from b in one of the two."""
    return (a["compressed_mb"] <= b["compressed_mb"] and quality(a) >= quality(b)
            and (a["compressed_mb"], quality(a)) != (b["compressed_mb"], quality(b)))


def point(model, mb, value, higher_is_better=True, sparsity=0.0, bits=32):
    return {"model": model, "checkpoint": f"{model}.pt", "params": MODEL_PARAMS[model],
            "method": method_of(sparsity, bits), "sparsity": sparsity, "bits": bits, "compressed_mb": float(mb),
            "fp32_mb": 12.0, "metric": "bleu" if higher_is_better else "loss", "value": float(value),
            "higher_is_better": higher_is_better, "subset": "test", "seconds": 1.0}


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_frontier_of_a_fixed_sweep_with_ties_and_duplicates(higher_is_better):
    value = (lambda bleu: bleu) if higher_is_better else (lambda bleu: 20 - bleu)  # as a loss: lower is better
    records = {
        "a": point("small", 1, value(10), higher_is_better, sparsity=0.9),
        "b": point("base", 1, value(10), higher_is_better, bits=4),  # ties a on both: kept
        "c": point("big", 1, value(8), higher_is_better, sparsity=0.9),  # as small as a, worse
        "d": point("small", 2, value(10), higher_is_better, sparsity=0.5),  # as good as a, bigger
        "e": point("big", 3, value(12), higher_is_better, sparsity=0.5, bits=8),
        "f": point("base", 3, value(12), higher_is_better, bits=8),  # ties e: kept
        "f2": point("base", 3, value(12), higher_is_better, bits=8),  # the very same config again: kept
        "g": point("base", 4, value(11), higher_is_better),  # bigger and worse than e
        "h": point("big", 5, value(15), higher_is_better),
        "i": point("small", 6, value(15), higher_is_better),  # as good as h, bigger
    }
    frontier = pareto_frontier(list(records.values()))
    names = {id(r): name for name, r in records.items()}
    # Smallest first; at equal size by model name, sparsity, bits (f and f2, the same config: as given).
    assert [names[id(r)] for r in frontier] == ["b", "a", "f", "f2", "e", "h"]
    assert frontier_by_sweep_line(list(records.values())) == {id(r) for r in frontier}
    hand = {("a", "c"), ("a", "d"), ("b", "c"), ("e", "g"), ("f", "g"), ("h", "i")}
    for x, y in hand:
        assert dominates(records[x], records[y]) and not dominates(records[y], records[x])
    assert not dominates(records["a"], records["b"]) and not dominates(records["f"], records["f2"])


def test_frontier_of_nothing_and_of_one_point():
    assert pareto_frontier([]) == []
    only = point("big", 3, 1.0)
    assert pareto_frontier([only]) == [only]


@given(sweeps())
def test_frontier_is_exactly_the_sweep_lines(records):
    frontier = pareto_frontier(records)
    assert len({id(r) for r in frontier}) == len(frontier)  # no record twice
    assert {id(r) for r in frontier} == frontier_by_sweep_line(records)
    assert [r["compressed_mb"] for r in frontier] == sorted(r["compressed_mb"] for r in frontier)


@given(sweeps())
def test_every_point_off_the_frontier_is_beaten_by_a_frontier_point_and_none_on_it_is(records):
    frontier = pareto_frontier(records)
    assert frontier
    on = {id(f) for f in frontier}
    for candidate in records:
        assert any(beats(f, candidate) for f in frontier) == (id(candidate) not in on)


def assert_best_of(best, candidates):
    """``best`` ranks first among ``candidates``: the best metric, then the fewest MB, then the fewest parameters."""
    top = max(quality(r) for r in candidates)
    assert quality(best) == top
    top = [r for r in candidates if quality(r) == top]
    assert best["compressed_mb"] == min(r["compressed_mb"] for r in top)
    top = [r for r in top if r["compressed_mb"] == best["compressed_mb"]]
    assert best["params"] == min(r["params"] for r in top)


@given(sweeps(), st.integers(0, 13))
def test_selection_picks_the_best_config_within_the_budget(records, budget):
    selection = select(records, float(budget))
    fitting = [r for r in records if r["compressed_mb"] <= budget]
    line = describe(selection)
    if not fitting:
        assert selection.best is None and "nothing fits" in line
        return
    assert selection.best["compressed_mb"] <= budget
    assert_best_of(selection.best, fitting)
    dense = [r for r in fitting if r["method"] == "dense"]
    if dense:
        assert selection.best_dense["method"] == "dense" and selection.best_dense["compressed_mb"] <= budget
        assert_best_of(selection.best_dense, dense)
    else:
        assert selection.best_dense is None and "no uncompressed (dense 32-bit) model fits" in line


@given(sweeps())
def test_the_best_under_a_frontier_points_size_is_on_the_frontier(records):
    on = frontier_by_sweep_line(records)
    for record in records:
        if id(record) in on:
            assert id(select(records, record["compressed_mb"]).best) in on


@settings(max_examples=5)
@given(sweeps())
def test_a_latency_budget_needs_measured_latencies(records):
    with pytest.raises(AnalysisError, match="--max-ms"):
        select(records, 100.0, max_ms=5.0)


@given(sweeps())
def test_sweep_records_pass_the_schema_check_and_a_missing_field_is_named(records):
    for record in records:
        check_record(record, "line 1")
        assert config_key(record) == config_key(json.loads(json.dumps(record)))
        for field in FIELDS:
            with pytest.raises(AnalysisError, match=field):
                check_record({k: v for k, v in record.items() if k != field}, "line 1")


@given(st.lists(st.tuples(st.integers(1, 9), st.floats(0.5, 60)), min_size=1, max_size=8, unique_by=lambda p: p[0]),
       st.integers(1, 100))
def test_validations_get_the_training_clock_at_their_update(steps, update):
    # A real clock: updates and wall seconds both increase.
    updates, wall = 0, 0.0
    clock = []
    for step, seconds in steps:
        updates, wall = updates + step, wall + seconds
        clock.append((updates, wall))
    at = wall_at(clock, update)
    exact = [w for u, w in clock if u == update]
    if exact:
        assert at == exact[0]
    else:
        below = [w for u, w in clock if u < update]
        above = [w for u, w in clock if u > update]
        assert (max(below) if below else above[0]) <= at <= (min(above) if above else below[-1])


train_record = st.fixed_dictionaries({
    "epoch": st.integers(1, 3), "loss": st.floats(0, 12).map(lambda x: f"{x:.3f}"),
    "wps": st.integers(1, 9999).map(str), "train_wall": st.integers(0, 99).map(str),
})


@settings(max_examples=30)
@given(st.lists(train_record, min_size=1, max_size=6), st.lists(st.floats(0, 12), min_size=1, max_size=6),
       st.sampled_from(["log-file", "console"]))
def test_a_log_reads_back_its_records_whichever_form_and_however_often_fairseq_repeats_them(
        tmp_path_factory, records, losses, form):
    """fairseq's --log-file writes epoch N's records N times, with no tag; the console tags them."""
    lines = []
    for i, record in enumerate(records, start=1):
        inner = {**record, "num_updates": str(2 * i), "wall": str(10 * i)}
        lines += [("train_inner", inner)] * record["epoch"]
    for i, loss in enumerate(losses, start=1):
        lines.append(("valid", {"epoch": 1, "valid_loss": f"{loss:.3f}", "valid_num_updates": str(2 * i)}))
    text = "\n".join(json.dumps(r) if form == "log-file" else f"2026-01-01 00:00:00 | INFO | {tag} | {json.dumps(r)}"
                     for tag, r in lines)
    path = tmp_path_factory.mktemp("log") / "train.log"
    path.write_text("some plain message\n{'_name': None}\n" + text + "\n")
    log = read_training_log(path)
    assert [r["num_updates"] for r in log.train_inner] == [2.0 * i for i in range(1, len(records) + 1)]
    assert [v.metrics["valid_loss"] for v in log.validations] == [float(f"{loss:.3f}") for loss in losses]
    for v in log.validations:  # a validation at update 2i follows the train_inner at 2i, whose wall is 10i
        assert v.wall_s == (5.0 * v.updates if v.updates <= 2 * len(records) else 10.0 * len(records))


def test_analyze_runs_without_fairseq_or_torch():
    """The analysis is plain python: it runs where neither is installed (here: their import made to fail)."""
    code = ("import runpy, sys\n"
            "sys.modules.update(fairseq=None, fairseq_cli=None, torch=None)\n"
            "sys.argv = ['analyze.py', '--help']\n"
            "runpy.run_path('scripts/analyze.py', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for command in ("convergence", "frontier", "select", "report"):
        assert command in proc.stdout


def speed_record(**settings):
    record = {"model": "big", "checkpoint": "big.pt", "params": 20_000, "sparsity": 0.0, "bits": 32,
              "compressed_mb": 1.0, "fp32_mb": 2.0, "metric": "bleu", "value": 20.0, "higher_is_better": True,
              "subset": "test", "seconds": 1.0, **settings}
    record["method"] = record_method(record)
    return record


def test_speed_settings_name_the_method_label_the_config_and_keep_configs_apart():
    heads = speed_record(prune_heads=0.25, prune_ffn=0.5)
    int8 = speed_record(int8=True)
    both = speed_record(prune_ffn=0.5, int8=True, tokens_per_s=812.5, latency_ms=35.2)
    assert [r["method"] for r in (speed_record(), heads, int8, both)] == ["dense", "structured", "int8",
                                                                          "structured+int8"]
    assert level_label(heads) == "25% heads + 50% FFN removed"
    assert level_label(both) == "50% FFN removed + int8 kernels"
    assert method_of(0.5, 4, 0.25, 0.0, True) == "prune+quant+structured+int8"
    # Old records (no speed fields) keep their key: a sweep resumed by this version repeats nothing.
    assert config_key(speed_record()) == config_key({**speed_record(), "prune_heads": 0.0, "int8": False})
    assert len({config_key(r) for r in (speed_record(), heads, int8, both)}) == 4
    for record in (heads, int8, both):
        check_record(record, "sweep.jsonl:1")


@pytest.mark.parametrize("change, named", [
    ({"method": "dense"}, "method 'dense' does not match its config (25% heads removed: structured)"),
    ({"tokens_per_s": "fast"}, "tokens_per_s='fast' is not a float"),
    ({"int8": 1}, "int8=1 is not a bool"),
])
def test_a_wrong_speed_field_is_named(change, named):
    with pytest.raises(AnalysisError, match=re.escape(named)):
        check_record({**speed_record(prune_heads=0.25), **change}, "sweep.jsonl:3")


def test_decoding_speed_is_read_from_fairseq_generates_own_line():
    output = ("2026-11-26 21:00:01 | INFO | fairseq_cli.generate | Translated 1,000 sentences (15,432 tokens) in "
              "12.3s (81.30 sentences/s, 1254.63 tokens/s)\nGenerate test with beam=1: BLEU = 20.10 ...")
    tokens_per_s, latency_ms = generation_speed(output)
    assert tokens_per_s == 1254.63 and latency_ms == pytest.approx(1000 / 81.30)
    with pytest.raises(AnalysisError, match="no 'Translated N sentences"):
        generation_speed("Generate test with beam=1: BLEU = 20.10")
