"""The plugin's one entry point into fairseq: everything it registers and every fairseq patch, each applied once.

fairseq loads this through ``--user-dir fairseq_ext``; in Python, ``import fairseq_ext.plugin``. Importing the
fairseq glue (``fairseq_ext.models``, ``fairseq_ext.tasks``) loads it too. The compression core
(``fairseq_ext.compression``) and the analysis (``fairseq_ext.analysis``) never do: they stay free of fairseq.

Registered by importing the modules that declare them: the size-grid archs (``models/``), the
``compressed_*`` tasks (``tasks/``) and the ``masked_lm_accuracy`` criterion (``criterions/``).

Patched, in this order, once per process (a second import, or ``--user-dir`` after ``import fairseq_ext``,
finds each patch marked and changes nothing):

1. ``torch.serialization`` safe globals: + ``argparse.Namespace``, so fairseq checkpoints load under torch's
   weights-only ``torch.load`` (the default since torch 2.6) without turning safe loading off.
2. ``checkpoint_utils.load_checkpoint_to_cpu``, the function every fairseq loader goes through: packed ``.fxc``
   files load like checkpoints; a refused pickle or a truncated file is one line of error; a compression flag that
   the checkpoint's saved task has no key for (fairseq-validate would silently drop it) is refused.
3. ``checkpoint_utils.load_model_ensemble_and_task``: a vocabulary-size mismatch names both dictionaries; a task
   that runs ``--int4-kernels`` gets a packed file's 4-bit tensors as codes.
4. ``checkpoint_utils.PathManager``: the copy of a fresh checkpoint to ``checkpoint_last.pt`` is atomic.
5. ``RobertaModel.add_args``: + ``--post-norm`` for the ``roberta_d*_h*`` grid.
6. ``sys.excepthook``: the plugin's own errors (a bad flag, a damaged or mismatched file) print one clear block,
   without a Python traceback (``FAIRSEQ_EXT_TRACEBACK=1`` shows it; fairseq_ext/user_errors.py).
7. ``numpy.compat.long`` where numpy (2.x) has no ``numpy.compat``: fairseq's TokenBlockDataset still reads it for
   ``--sample-break-mode eos`` (one sentence per masked-LM sample), and failed there with an AttributeError.

(The GPU training benchmark's two patches live apart, in fairseq_ext/gpu_training.py: its stock arm must run
fairseq without this plugin.)
"""
import functools
import sys
import types

import numpy
import torch
from fairseq import checkpoint_utils
from fairseq.models.roberta.model import RobertaModel

from fairseq_ext import checkpoint_loading, user_errors
from fairseq_ext.criterions import masked_lm_accuracy  # noqa: F401  (register the criterion)
from fairseq_ext.models import roberta_grid, transformer_grid  # noqa: F401  (register the grid archs)
from fairseq_ext.tasks import compressed_tasks, compression_overrides  # noqa: F401  (register the tasks)

PATCH_MARK = "fairseq_ext_patch"


def patch(owner, name, wrap, static=False):
    """owner.name = wrap(owner.name), unless it is wrapped already."""
    original = getattr(owner, name)
    if getattr(original, PATCH_MARK, False):
        return
    patched = wrap(original)
    setattr(patched, PATCH_MARK, True)
    setattr(owner, name, staticmethod(patched) if static else patched)


def loading_checkpoints(load_checkpoint_to_cpu):
    @functools.wraps(load_checkpoint_to_cpu)
    def load(path, arg_overrides=None, *args, **kwargs):
        if checkpoint_loading.is_packed(path):
            state = checkpoint_loading.packed_checkpoint(path, arg_overrides)
        else:
            state = checkpoint_loading.load_safely(load_checkpoint_to_cpu, path, arg_overrides, *args, **kwargs)
        compression_overrides.refuse_dropped_compression_flags(path, state, arg_overrides)
        return state

    return load


torch.serialization.add_safe_globals(checkpoint_loading.CHECKPOINT_SAFE_GLOBALS)
patch(checkpoint_utils, "load_checkpoint_to_cpu", loading_checkpoints)
patch(checkpoint_utils, "load_model_ensemble_and_task", checkpoint_loading.loading_ensembles)
patch(checkpoint_utils, "PathManager", checkpoint_loading.AtomicCopies)
patch(RobertaModel, "add_args", roberta_grid.with_post_norm_flag, static=True)
patch(sys, "excepthook", user_errors.reporting_user_errors)
if not hasattr(numpy, "compat"):
    numpy.compat = types.SimpleNamespace(long=numpy.int64)
