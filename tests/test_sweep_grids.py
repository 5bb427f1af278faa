"""The sweep's grids and task table (fairseq_ext.analysis.sweep_grids), importable and checked as data: every config
of every grid is a valid sweep record, once per grid, and the calibrated configs name the calibrated methods."""
import pytest

from fairseq_ext.analysis.sweep_grids import GRIDS, TASKS, calibrated, config
from fairseq_ext.analysis.sweep_results import check_record, config_key, is_calibrated, record_method


def as_record(entry):
    record = {"model": "m", "checkpoint": "m.pt", "params": 1, "compressed_mb": 1.0, "fp32_mb": 1.0, "metric": "bleu",
              "value": 1.0, "higher_is_better": True, "subset": "test", "seconds": 1.0, **entry}
    return {**record, "method": record_method(record)}


@pytest.mark.parametrize("grid", list(GRIDS))
def test_every_config_of_a_grid_is_a_valid_record_once(grid):
    records = [as_record(entry) for entry in GRIDS[grid]]
    for record in records:
        check_record(record, f"--grid {grid}")
    assert len({config_key(record) for record in records}) == len(records)
    assert records[0]["method"] == "dense"


def test_the_named_grids_and_their_presets():
    assert list(GRIDS) == ["full", "quick", "speed", "tiny", "dense"]
    assert calibrated(0.5, 4) == {"sparsity": 0.5, "bits": 4, "prune_method": "sparsegpt", "quant_method": "gptq"}
    assert GRIDS["tiny"] == [config(), config(0.5), config(bits=4), calibrated(0.5, 4)]
    assert [is_calibrated(entry) for entry in GRIDS["tiny"]] == [False, False, False, True]
    assert {name: (task.tool, task.metric) for name, task in TASKS.items()} == {
        "translation": ("fairseq-generate", "bleu"), "masked_lm": ("fairseq-validate", "loss"),
        "sentence_prediction": ("fairseq-validate", "accuracy")}
