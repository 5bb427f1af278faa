"""Compression in plain torch (no fairseq import): pruning, quantization, byte accounting, packed files.

The names below load their module (and torch) on first use, not with the package: the method table
(``fairseq_ext.compression.methods``) is plain python, and the torch-free analysis imports it from here.
"""

import importlib

_HOMES = {
    "accounting": ("CompressionReport", "TensorBytes", "account", "compress"),
    "packed": ("FORMAT_VERSION", "__version__", "load_compressed", "save_compressed"),
    "pruning": ("apply_masks", "magnitude_masks", "prunable_weights"),
    "quantization": ("QuantizationAwareTraining", "QuantizedTensor", "dequantize", "fake_quantize", "fake_quantize_",
                     "quantizable_weights", "quantize"),
    "schedules": ("PruningSchedule", "sparsity_at", "validate_schedule"),
    "spec": ("CompressionSpec",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME_OF)


def __getattr__(name):
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME_OF[name]}"), name)
    globals()[name] = value  # looked up once
    return value
