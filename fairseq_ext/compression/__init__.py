"""Compression in plain torch (no fairseq import): pruning, quantization, byte accounting, packed files."""

from .accounting import CompressionReport, TensorBytes, account, compress
from .packed import FORMAT_VERSION, __version__, load_compressed, save_compressed
from .pruning import apply_masks, magnitude_masks, prunable_weights
from .quantization import (
    QuantizationAwareTraining,
    QuantizedTensor,
    dequantize,
    fake_quantize,
    fake_quantize_,
    quantizable_weights,
    quantize,
)
from .schedules import PruningSchedule, sparsity_at, validate_schedule
from .spec import CompressionSpec

__all__ = [
    "CompressionReport", "CompressionSpec", "PruningSchedule", "FORMAT_VERSION", "QuantizationAwareTraining", "QuantizedTensor",
    "TensorBytes", "__version__", "account", "apply_masks", "compress", "dequantize", "fake_quantize",
    "fake_quantize_", "load_compressed", "magnitude_masks", "prunable_weights", "quantizable_weights",
    "quantize", "save_compressed", "sparsity_at", "validate_schedule",
]
