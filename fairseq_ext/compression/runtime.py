"""The memory of a model's weights as it runs, whatever holds them (float parameters, int8 and int4 modules), and
the allocator setting that keeps a process's peak near it."""

import ctypes

from torch import nn

from .int8 import int8_linears

WEIGHTS_IN_BUFFERS = "weights_in_buffers"  # a module class attribute: its buffers are its weights


def runtime_bytes(model: nn.Module) -> int:
    """Bytes of the weights of ``model`` as it runs: every distinct storage among its parameters and among the
    buffers of the modules that keep their weights as buffers (int4 codes, int8 embedding rows: those with
    ``WEIGHTS_IN_BUFFERS``), a tied or shared tensor once; plus, per torch int8 Linear (which keeps its packed
    weight outside both), the int8 weight, one fp32 scale per output row and the bias. Tables a model computes
    rather than stores (sinusoidal positions) are not weights, and are the same in every variant of a model."""
    tensors = list(model.parameters())
    tensors += [b for m in model.modules() if getattr(m, WEIGHTS_IN_BUFFERS, False) for b in m.buffers(recurse=False)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    total = sum(storages.values())
    for module in int8_linears(model).values():
        weight, bias = module.weight(), module.bias()
        total += weight.numel() + 4 * weight.shape[0] + (0 if bias is None else bias.numel() * bias.element_size())
    return total


M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # the ceiling of glibc's dynamic threshold on 64-bit systems


def _mallopt(*settings):
    """glibc's mallopt for each (parameter, value); False where the C library has none or refuses one."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all([bool(mallopt(parameter, value)) for parameter, value in settings])


def return_large_frees_to_the_os() -> bool:
    """Pin glibc's mmap threshold at its initial 128 KiB. By default it rises to the size of every large block freed
    (up to 32 MiB), after which blocks that size come from the heap, and a heap freed in the middle stays resident:
    converting a model one weight at a time then leaves hundreds of MB of freed temporaries in the process's RSS.
    Returns whether it was set (False where the C library has no mallopt). Lift it with reuse_large_frees once the
    model is built."""
    return _mallopt((M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def reuse_large_frees() -> bool:
    """After a model is built: large blocks come from the heap again, up to glibc's dynamic ceiling (32 MiB), with
    the trim threshold at twice that, where glibc's own rule would have taken them after a few large frees. A
    decoder asks for the same large blocks at every step (logits, attention scores, the growing caches); with the
    threshold pinned at 128 KiB each one is a fresh mmap whose pages are faulted in and zeroed again, step after
    step. Returns whether it was set."""
    return _mallopt((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX))
