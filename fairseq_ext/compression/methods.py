"""The compression methods, one row each: the only place that lists them or says which need calibration data.

Plain python, no torch (importing this module must not load it): the flags (fairseq_ext.tasks), the packed file's
header, the calibrated compressor, the sweep's grids and the torch-free analysis all read this table. Each method's
algorithm stays in its own file; a row names the function that applies it by its dotted path (``apply``), which
``apply_function`` imports only when a model is compressed.

A pruning method's function decides how the calibrated compressor prunes one weight: given the weight, its inputs'
second moments, the sparsity, the n:m pattern (or None) and the magnitude keep mask (or None), it returns the
gptq.Pruning that the solver runs. A quantization method's function is the whole-tensor quantizer
(round-to-nearest) or the column solver (GPTQ) that compresses a weight onto its grid.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Method:
    kind: str  # "prune" or "quant"
    name: str  # its value of --prune-method / --quant-method, in specs, packed files and sweep records
    display_name: str  # how a table or a plot names it
    description: str  # how a packed file's header names it
    calibrated: bool  # fitted to calibration data (needs --calib-samples); False: the weights alone
    patterns: tuple[str, ...]  # pruning: the --prune-pattern values it supports
    granularities: tuple[str, ...]  # quantization: the --quant-granularity values it supports
    apply: str  # "module:function" that applies it

    def function(self) -> Callable:
        return apply_function(self.apply)


# What the methods can be asked for (CompressionSpec's prune_pattern and granularity); the first is the default.
PRUNE_PATTERNS = ("unstructured", "2:4")
GRANULARITIES = ("channel", "tensor", "group")

# The first method of each kind is the paper's and the default.
PRUNE_METHODS = {
    method.name: method for method in (
        Method("prune", "magnitude", "magnitude", "magnitude", False, PRUNE_PATTERNS, (),
               "fairseq_ext.compression.gptq:fixed_mask_pruning"),
        Method("prune", "wanda", "Wanda", "wanda", True, PRUNE_PATTERNS, (),
               "fairseq_ext.compression.wanda:wanda_pruning"),
        Method("prune", "sparsegpt", "SparseGPT", "sparsegpt", True, PRUNE_PATTERNS, (),
               "fairseq_ext.compression.gptq:sparsegpt_pruning"),
    )
}
QUANT_METHODS = {
    method.name: method for method in (
        Method("quant", "rtn", "RTN", "uniform round-to-nearest", False, (), GRANULARITIES,
               "fairseq_ext.compression.quantization:quantize"),
        Method("quant", "gptq", "GPTQ", "gptq", True, (), GRANULARITIES, "fairseq_ext.compression.gptq:solve_"),
    )
}
METHODS = {**PRUNE_METHODS, **QUANT_METHODS}
DEFAULT_PRUNE_METHOD = next(iter(PRUNE_METHODS))
DEFAULT_QUANT_METHOD = next(iter(QUANT_METHODS))
CALIBRATED_METHODS = tuple(name for name, method in METHODS.items() if method.calibrated)


def apply_function(dotted: str) -> Callable:
    """The function a row's ``apply`` names, imported now (the table itself imports nothing)."""
    module, _, function = dotted.partition(":")
    return getattr(importlib.import_module(module), function)
