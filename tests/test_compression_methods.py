"""The method table (fairseq_ext.compression.methods): every method once, and every "calibrated" decision read
from it, in the core, the flags and the torch-free analysis alike."""
import inspect

import pytest

from fairseq_ext.analysis.sweep_results import is_calibrated
from fairseq_ext.compression import CompressionSpec
from fairseq_ext.compression.methods import (
    CALIBRATED_METHODS, DEFAULT_PRUNE_METHOD, DEFAULT_QUANT_METHOD, GRANULARITIES, METHODS, PRUNE_METHODS,
    PRUNE_PATTERNS, QUANT_METHODS,
)
from fairseq_ext.tasks.compression_config import CompressionConfig


def test_every_method_is_listed_once_with_a_function_that_applies_it():
    assert list(PRUNE_METHODS) == ["magnitude", "wanda", "sparsegpt"]
    assert list(QUANT_METHODS) == ["rtn", "gptq"]
    assert (DEFAULT_PRUNE_METHOD, DEFAULT_QUANT_METHOD) == ("magnitude", "rtn")
    assert CALIBRATED_METHODS == ("wanda", "sparsegpt", "gptq")
    for name, method in METHODS.items():
        assert method.name == name and callable(method.function()), name
        assert set(method.patterns) <= set(PRUNE_PATTERNS) and set(method.granularities) <= set(GRANULARITIES)
    for method in PRUNE_METHODS.values():  # one signature: how the calibrated compressor prunes one weight
        assert list(inspect.signature(method.function()).parameters) == [
            "weight", "hessian", "sparsity", "n_of_m", "magnitude_keep"]


def test_the_flags_offer_exactly_the_table():
    fields = CompressionConfig.__dataclass_fields__
    assert [str(c) for c in fields["prune_method"].type] == list(PRUNE_METHODS)
    assert [str(c) for c in fields["quant_method"].type] == list(QUANT_METHODS)


@pytest.mark.parametrize("prune_method", list(PRUNE_METHODS))
@pytest.mark.parametrize("quant_method", list(QUANT_METHODS))
def test_calibrated_is_decided_by_the_table_in_the_core_and_the_analysis(prune_method, quant_method):
    spec = CompressionSpec(sparsity=0.5, bits=4, prune_method=prune_method, quant_method=quant_method)
    fitted = prune_method in CALIBRATED_METHODS or quant_method in CALIBRATED_METHODS
    assert spec.needs_calibration_data == spec.calibrated == fitted
    record = {"sparsity": 0.5, "bits": 4, "prune_method": prune_method, "quant_method": quant_method}
    assert is_calibrated(record) == fitted
    two_four = CompressionSpec(sparsity=0.5, bits=4, prune_method=prune_method, prune_pattern="2:4",
                               quant_method=quant_method)
    assert two_four.calibrated and two_four.needs_calibration_data == fitted  # magnitude 2:4 reads no data
