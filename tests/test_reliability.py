"""Reliability of the plugin's own writes (issue 8, item 2): results files are replaced atomically."""
import json
import os

import pytest

from fairseq_ext.analysis.sweep_results import append_record, load_records

RECORD = {"model": "m", "checkpoint": "c.pt", "params": 10, "method": "prune", "sparsity": 0.5, "bits": 32,
          "compressed_mb": 0.1, "fp32_mb": 0.2, "metric": "bleu", "value": 1.0, "higher_is_better": True,
          "subset": "test", "seconds": 1.0}


def test_a_sweep_append_killed_mid_write_leaves_the_previous_results_intact(tmp_path, monkeypatch):
    path = tmp_path / "sweep.jsonl"
    append_record(path, RECORD)
    append_record(path, {**RECORD, "sparsity": 0.7})
    before = path.read_bytes()

    def killed(*args):
        raise KeyboardInterrupt  # the process dies between writing the new file and the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        append_record(path, {**RECORD, "sparsity": 0.9})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [r["sparsity"] for r in load_records(path, option="--out")] == [0.5, 0.7]
    append_record(path, {**RECORD, "sparsity": 0.9})  # a resumed sweep goes on from there
    assert [json.loads(line)["sparsity"] for line in path.read_text().splitlines()] == [0.5, 0.7, 0.9]
