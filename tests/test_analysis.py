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
from fairseq_ext.analysis.sweep_results import (
    FIELDS, check_record, compressor_family, config_key, level_label, method_of, record_method,
)
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
        # The calibrated compressors, where the config prunes or quantizes (as the sweep writes them).
        calibrated = draw(st.booleans())
        compressors = {**({"prune_method": "sparsegpt"} if calibrated and sparsity else {}),
                       **({"quant_method": "gptq"} if calibrated and bits < 32 else {})}
        return {
            "model": model, "checkpoint": f"{model}.pt", "params": MODEL_PARAMS[model],
            "method": method_of(sparsity, bits), "sparsity": sparsity, "bits": bits,
            "compressed_mb": float(draw(st.integers(1, 12))), "fp32_mb": 12.0,
            "metric": "bleu" if higher else "loss", "value": float(draw(st.integers(0, 8))),
            "higher_is_better": higher, "subset": "test", "seconds": 1.0, **compressors,
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


def compressed_record(model="big", sparsity=0.0, bits=32, value=20.0, mb=1.0, **fields):
    record = {"model": model, "checkpoint": f"{model}.pt", "params": MODEL_PARAMS[model], "sparsity": sparsity,
              "bits": bits, "compressed_mb": mb, "fp32_mb": 12.0, "metric": "bleu", "value": value,
              "higher_is_better": True, "subset": "test", "seconds": 1.0, **fields}
    record["method"] = record_method(record)
    return record


def test_compressor_families_split_the_configs_and_dense_belongs_to_both():
    from fairseq_ext.analysis.frontier import family_records

    dense = compressed_record()
    magnitude = compressed_record(sparsity=0.7)
    rtn = compressed_record(bits=2)
    sparsegpt = compressed_record(sparsity=0.7, prune_method="sparsegpt")
    wanda = compressed_record(sparsity=0.5, prune_method="wanda")
    gptq = compressed_record(bits=2, quant_method="gptq")
    mixed = compressed_record(sparsity=0.5, bits=4, prune_method="sparsegpt")  # SparseGPT, then round-to-nearest
    structured = compressed_record(prune_heads=0.25)
    records = [dense, magnitude, rtn, sparsegpt, wanda, gptq, mixed, structured]
    assert [compressor_family(r) for r in records] == [None, "paper", "paper", "calibrated", "calibrated",
                                                       "calibrated", "calibrated", None]
    assert family_records(records, "paper") == [dense, magnitude, rtn]
    assert family_records(records, "calibrated") == [dense, sparsegpt, wanda, gptq, mixed]


def test_level_labels_name_the_compressors_other_than_the_papers():
    assert level_label(compressed_record(sparsity=0.7)) == "70% pruned"
    assert level_label(compressed_record(sparsity=0.7, prune_method="sparsegpt")) == "70% pruned (SparseGPT)"
    assert level_label(compressed_record(bits=2, quant_method="gptq")) == "2-bit (GPTQ)"
    assert level_label(compressed_record(sparsity=0.5, bits=4, prune_method="sparsegpt", quant_method="gptq")) == \
        "50% pruned + 4-bit (SparseGPT+GPTQ)"
    assert level_label(compressed_record(sparsity=0.5, bits=4, quant_method="gptq")) == \
        "50% pruned + 4-bit (magnitude+GPTQ)"
    assert level_label(compressed_record(sparsity=0.5, bits=4)) == "50% pruned + 4-bit"


def test_old_records_keep_their_config_keys_and_each_compressor_is_a_config_of_its_own():
    old = compressed_record(sparsity=0.7)  # written before the compressors were recorded: no method fields
    assert config_key(old) == config_key({**old, "prune_method": "magnitude", "quant_method": "rtn"})
    keys = {config_key(r) for r in (old, compressed_record(sparsity=0.7, prune_method="sparsegpt"),
                                    compressed_record(sparsity=0.7, prune_method="wanda"))}
    assert len(keys) == 3


@pytest.mark.parametrize("fields, named", [
    ({"sparsity": 0.5, "prune_method": "obs"}, "prune_method='obs' is not one of magnitude, wanda, sparsegpt"),
    ({"bits": 4, "quant_method": "awq"}, "quant_method='awq' is not one of rtn, gptq"),
    ({"prune_method": "sparsegpt"}, "prune_method='sparsegpt' on a config that prunes nothing (sparsity 0)"),
    ({"quant_method": "gptq"}, "quant_method='gptq' on a config that quantizes nothing (bits 32)"),
    ({"bits": 4, "quant_method": "gptq", "calibration_samples": "128"}, "calibration_samples='128' is not a int"),
])
def test_a_wrong_compressor_field_is_named(fields, named):
    with pytest.raises(AnalysisError, match=re.escape(named)):
        check_record(compressed_record(**fields), "sweep.jsonl:2")


def write_translations(folder, model, label, lines):
    path = folder / "hyps" / model / f"{label}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return str(path.relative_to(folder))


def references(count=200):
    """Sentences in pairs that differ in their last word only: the even ones and the odd ones score alike."""
    words = "un chat noir dort sur la table pendant que le chien court dans le parc".split()
    return [" ".join(words[i // 2 % 7:i // 2 % 7 + 5 + i // 2 % 5]) + f" {i}" for i in range(count)]


def translated(folder, model, label, lines, value, refs="hyps/references.test.txt", **fields):
    return compressed_record(model, value=value, examples=len(lines),
                             hypotheses=write_translations(folder, model, label, lines), references=refs, **fields)


def test_paired_bootstrap_on_kept_translations_where_the_answer_is_known(tmp_path):
    from fairseq_ext.analysis.significance import SignificanceTests

    refs = references()
    (tmp_path / "hyps").mkdir()
    (tmp_path / "hyps" / "references.test.txt").write_text("".join(line + "\n" for line in refs))
    tests = SignificanceTests(tmp_path / "sweep.jsonl")
    perfect = translated(tmp_path, "big", "dense", refs, 100.0)
    again = translated(tmp_path, "small", "dense", refs, 100.0)
    empty = translated(tmp_path, "base", "dense", [""] * len(refs), 0.0)
    same = tests.compare(perfect, again)  # identical translations: no difference at all
    assert same.p_value == 1.0 and not same.significant and same.text() == "not significant (p = 1.000)"
    apart = tests.compare(perfect, empty)  # every sentence right vs none: as significant as 1,000 resamples say
    assert apart.p_value < 0.001 and apart.significant and apart.text() == "p < 0.001"
    # The even sentences right against the odd ones: the same BLEU, different translations: not significant.
    even = translated(tmp_path, "big", "even", [r if i % 2 == 0 else "" for i, r in enumerate(refs)], 50.0)
    odd = translated(tmp_path, "small", "odd", [r if i % 2 else "" for i, r in enumerate(refs)], 50.0)
    assert tests.compare(even, odd).p_value > 0.3
    # Another test set is no comparison.
    (tmp_path / "hyps" / "references.valid.txt").write_text("".join(line + "\n" for line in refs[::-1]))
    other = translated(tmp_path, "small", "valid", refs, 100.0, refs="hyps/references.valid.txt")
    with pytest.raises(AnalysisError, match="different references"):
        tests.compare(perfect, other)
    # A sweep copied without its hyps/ folder: named, with what to do.
    with pytest.raises(AnalysisError, match="keep the sweep's hyps/ folder beside it"):
        SignificanceTests(tmp_path / "elsewhere" / "sweep.jsonl").compare(perfect, empty)


def test_accuracy_differences_are_tested_unpaired_on_the_number_of_examples():
    from fairseq_ext.analysis.significance import SignificanceTests, two_proportion_p

    # 50% vs 60% of 1,000 examples: z = 0.1 / sqrt(0.55 * 0.45 * 2 / 1000) = 4.49
    assert two_proportion_p(50.0, 60.0, 1000, 1000) == pytest.approx(math.erfc(4.4947 / math.sqrt(2)), rel=1e-3)
    assert two_proportion_p(50.0, 60.0, 50, 50) == pytest.approx(0.3149, abs=1e-3)  # z = 1.005
    assert two_proportion_p(100.0, 100.0, 872, 872) == 1.0
    a = {**compressed_record(value=85.2, examples=872), "metric": "accuracy"}
    b = {**compressed_record(model="small", value=80.1, examples=872), "metric": "accuracy"}
    difference = SignificanceTests("sweep.jsonl").compare(a, b)
    assert difference.significant
    # Without the number of examples (an older sweep), or for a loss, there is no test.
    assert SignificanceTests("sweep.jsonl").compare({k: v for k, v in a.items() if k != "examples"}, b) is None
    assert SignificanceTests("sweep.jsonl").compare({**a, "metric": "loss"}, {**b, "metric": "loss"}) is None
    # The report says how it tested, and that the accuracy test is unpaired.
    from fairseq_ext.analysis.report import significance_note

    assert "two-proportion z-test" in significance_note("accuracy") and "unpaired" in significance_note("accuracy")
    assert significance_note("loss").startswith("The differences in loss are not tested for significance")


def test_the_report_answers_per_compressor_family_from_the_numbers(tmp_path):
    """A sweep where GPTQ keeps the large model's 2-bit translations and round-to-nearest does not: with the
    calibrated compressors the large model wins under more budgets, and the report says so, with its tests."""
    from sacrebleu.metrics import BLEU

    from fairseq_ext.analysis.report import write_report

    refs = references()
    (tmp_path / "hyps").mkdir()
    (tmp_path / "hyps" / "references.test.txt").write_text("".join(line + "\n" for line in refs))

    def config(model, mb, right, label, **fields):
        """A config whose translations are right for the first `right` of every 20 sentences, scored by sacrebleu."""
        lines = [r if i % 20 < right else "" for i, r in enumerate(refs)]
        bleu = round(BLEU().corpus_score(lines, [refs]).score, 2)
        return {**translated(tmp_path, model, label, lines, bleu, **fields), "compressed_mb": mb}

    records = [
        config("small", 2.0, 12, "dense"), config("big", 12.0, 20, "dense"),
        config("small", 0.5, 8, "4-bit", bits=4), config("small", 0.5, 10, "4-bit-gptq", bits=4, quant_method="gptq"),
        config("big", 1.5, 2, "2-bit", bits=2), config("big", 1.5, 19, "2-bit-gptq", bits=2, quant_method="gptq"),
    ]
    for record in records:
        check_record(record, "sweep.jsonl")
    (tmp_path / "sweep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report, _ = write_report(tmp_path)
    text = report.read_text()
    families = json.loads((tmp_path / "report" / "families.json").read_text())
    rows = {(row["budget_mb"], row["family"]): row for row in families["rows"]}
    assert sorted({budget for budget, _ in rows}) == [0.5, 1.5, 12.0]  # the combined frontier's sizes
    # 0.5 MB: only the small model fits, nothing to compare with.
    assert rows[0.5, "paper"]["other_model"] == rows[0.5, "calibrated"]["other_model"] == "none fits"
    # 1.5 MB: round-to-nearest 2-bit wrecks the large model, GPTQ 2-bit keeps it ahead.
    assert (rows[1.5, "paper"]["model"], rows[1.5, "paper"]["larger_wins"]) == ("small", False)
    assert (rows[1.5, "calibrated"]["model"], rows[1.5, "calibrated"]["compression"]) == ("big", "2-bit (GPTQ)")
    assert rows[1.5, "calibrated"]["larger_wins"] and rows[1.5, "calibrated"]["p_value"] < 0.05
    # 12 MB: the large model uncompressed, in both families (dense belongs to both).
    assert rows[12.0, "paper"]["larger_wins"] and rows[12.0, "calibrated"]["larger_wins"]
    assert families["verdict"] == (
        'With the calibrated compressors, "train large, then compress" holds more often than with the paper\'s: '
        "the larger model wins significantly (p < 0.05) under 2 of 2 budgets with the calibrated compressors and "
        "1 of 2 with the paper's (budgets where both families fit models of two sizes).")
    assert "## Which model under a memory budget, per compressor family" in text and families["verdict"] in text
    assert "sacrebleu's paired bootstrap resampling (1,000 resamples)" in text
    # The paper's comparison carries its test too: GPTQ 2-bit big (1.5 MB) against small dense (2 MB) under 2 MB.
    budgets = {row["budget_mb"]: row for row in json.loads((tmp_path / "report" / "budgets.json").read_text())}
    assert budgets[1.5]["dense_model"] == "none fits" and budgets[1.5]["difference"] == "-"
    # The paper's question, every compressor together: the winner's size against the best other size that fits.
    assert [budgets[b]["kind"] for b in (0.5, 1.5, 12.0)] == [
        "the only size that fits, compressed", "larger model, compressed", "larger model, uncompressed"]
    sizes = json.loads((tmp_path / "report" / "sizes.json").read_text())
    assert sizes["lines"][0] == "0.5 MB: only small fits"
    assert sizes["lines"][1] == ("1.5 MB: big 2-bit (GPTQ) 93.55 against small 4-bit (GPTQ) 36.79: the larger "
                                 "model wins (p < 0.001)")
    assert sizes["verdict"] == ("Train large, then compress? The larger model, compressed, beats the best smaller "
                                "one under 2 of 2 budgets where two sizes fit, significantly (p < 0.05) under 2; "
                                "the smaller model wins under 0.")
    assert "## Train large, then compress? The larger model against the smaller one" in text
    assert sizes["verdict"] in text
    for png in ("frontier_all.png", "frontier_paper.png", "frontier_calibrated.png"):
        assert f"]({png})" in text


def test_merged_sweeps_keep_their_translations_reachable(tmp_path):
    from fairseq_ext.analysis.significance import SignificanceTests
    from fairseq_ext.analysis.sweep_results import merge_sweeps, read_sweep

    refs = references(10)
    parts = []
    for model, right in (("small", 3), ("big", 10)):
        folder = tmp_path / "sweep"
        (folder / "hyps").mkdir(parents=True, exist_ok=True)
        (folder / "hyps" / "references.test.txt").write_text("".join(line + "\n" for line in refs))
        record = translated(folder, model, "dense", refs[:right] + [""] * (10 - right), 10.0 * right)
        parts.append(folder / f"{model}.jsonl")
        parts[-1].write_text(json.dumps(record) + "\n")
    merge_sweeps(parts, tmp_path / "sweep.jsonl")
    merged = read_sweep(tmp_path / "sweep.jsonl")
    assert [r["hypotheses"] for r in merged] == ["sweep/hyps/small/dense.txt", "sweep/hyps/big/dense.txt"]
    assert SignificanceTests(tmp_path / "sweep.jsonl").compare(*merged).p_value < 1


def test_translations_are_read_in_sentence_order_best_hypothesis_first():
    from fairseq_ext.analysis.fairseq_output import translations

    output = "\n".join([
        "2026-12-01 10:00:00 | INFO | fairseq_cli.generate | loading model(s)",
        "S-1\tthe dog", "T-1\tle chien", "H-1\t-0.5\t▁le ▁chien", "D-1\t-0.5\tle chien", "D-1\t-0.9\tun chien",
        "P-1\t-0.2 -0.3", "S-0\ta cat", "T-0\tun chat", "H-0\t-2.1\t", "D-0\t-2.1\t",  # an empty hypothesis
        "Generate test with beam=2: BLEU = 50.00 ...",
    ])
    assert translations(output) == (["", "le chien"], ["un chat", "le chien"])
    with pytest.raises(AnalysisError, match="--quiet hides them"):
        translations("Generate test with beam=2: BLEU = 50.00 ...")


def test_calibration_fields_come_from_the_compressed_line_which_must_name_the_compressors_asked_for():
    from fairseq_ext.analysis.fairseq_output import calibration_fields, compressed_figures

    # fairseq-generate's own line for a SparseGPT-only config: no quantization, so its quant_method is "none".
    line = ('INFO:fairseq_ext.tasks.compression:compressed {"sparsity": 0.7, "bits": 32, "compressed_mb": 5.207, '
            '"fp32_mb": 7.662, "ratio": 1.47, "params": 1915392, "prune_method": "sparsegpt", "prune_pattern": '
            '"unstructured", "quant_method": "none", "calibration": {"subset": "train", "samples": 128, '
            '"batches": 2, "stages": 4, "seconds": 1.234}}')
    figures = compressed_figures(line)
    sparsegpt = {"sparsity": 0.7, "bits": 32, "prune_method": "sparsegpt"}
    assert calibration_fields(figures, sparsegpt, 64) == {"calibration_samples": 128, "calibration_seconds": 1.23}
    with pytest.raises(AnalysisError, match="asked for prune-method wanda, the tool reports sparsegpt"):
        calibration_fields(figures, {**sparsegpt, "prune_method": "wanda"}, 128)
    # The paper's compressors: the line is the one it always was, and the record gets no calibration fields.
    plain = compressed_figures('compressed {"sparsity": 0.0, "bits": 4, "compressed_mb": 1.0, "fp32_mb": 7.7, '
                               '"params": 1915392}')
    assert calibration_fields(plain, {"sparsity": 0.0, "bits": 4}, 128) == {}
    # A tool that logs no calibration: the samples asked for.
    assert calibration_fields(plain, {"sparsity": 0.0, "bits": 4, "quant_method": "gptq"}, 128) == \
        {"calibration_samples": 128}


def write_finetuned(run, folder, name, accuracy):
    (run / folder / name).mkdir(parents=True)
    (run / folder / name / "meta.json").write_text(json.dumps({"name": name, "valid_accuracy": accuracy}))


def test_what_pretraining_added_is_the_gain_of_the_means_over_seeds_and_says_when_it_beats_the_spread(tmp_path):
    from fairseq_ext.analysis.control import (control_markdown, control_rows, control_verdict, pretrained_seeds,
                                              what_the_frontier_shows)

    for folder, accuracy in [("finetune", 82.0), ("finetune-seed2", 80.0), ("finetune-seed10", 81.0),
                             ("scratch", 78.0), ("scratch-seed2", 79.0), ("scratch-seed3", 77.0)]:
        write_finetuned(tmp_path, folder, "d3_h256", accuracy)
    write_finetuned(tmp_path, "finetune", "d6_h256", 75.0)  # no control: not compared
    assert {name: seeds.values for name, seeds in pretrained_seeds(tmp_path).items()} == \
        {"d3_h256": (82.0, 80.0, 81.0), "d6_h256": (75.0,)}
    (row,) = control_rows(tmp_path)
    assert row["pretrained"].values == (82.0, 80.0, 81.0) and row["scratch"].values == (78.0, 79.0, 77.0)
    assert row["gain"] == pytest.approx(3.0) and row["beyond_spread"]
    assert row["pretrained"].text() == "81.00 +- 1.00 (3 seeds: 80.00-82.00)"
    assert control_verdict(row) == ("d3_h256: pretraining added +3.00 points of dev accuracy on the mean (81.00 +- 1.00 "
                                    "(3 seeds: 80.00-82.00) pretrained vs 78.00 +- 1.00 (3 seeds: 77.00-79.00) from "
                                    "random weights), larger than the spread: every pretrained seed beats every "
                                    "control seed.")
    assert "| d3_h256 | 81.00 +- 1.00 (3 seeds: 80.00-82.00) | 78.00 +- 1.00 (3 seeds: 77.00-79.00) | +3.00 | yes |" \
        in control_markdown([row])
    assert what_the_frontier_shows([row]).startswith("Pretraining added beyond the seeds' spread (d3_h256)")
    write_finetuned(tmp_path, "scratch-seed4", "d3_h256", 80.5)  # a control seed above the worst pretrained one
    (row,) = control_rows(tmp_path)
    assert not row["beyond_spread"] and "within the spread: the seeds' ranges overlap" in control_verdict(row)
    assert "does not test the paper's claim" in what_the_frontier_shows([row])
