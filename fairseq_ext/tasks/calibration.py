"""Calibration batches for the calibrated compressors (--prune-method wanda|sparsegpt, --quant-method gptq).

``--calib-samples`` samples of ``--calib-subset`` (default: train), drawn with ``--calib-seed``, batched by length
as fairseq batches them, and run through the model the way the task's criterion runs it: translation pairs
teacher-forced (source and target prefix), masked-LM samples as masked for training, sentence-prediction inputs
through the classification head. The core (fairseq_ext.compression.calibrated) decides where each pass may stop.
"""
import time
from functools import partial

import numpy as np
import torch

from fairseq_ext.compression.calibrated import compress_calibrated

from .compression_config import value

BATCH_TOKENS = 4096  # per calibration batch (padding included): small enough for any CPU, large enough to be fast


def calibration_forwards(task, model, subset, samples, seed):
    """One callable per batch, each running it through ``model``."""
    try:
        task.load_dataset(subset)
    except (FileNotFoundError, OSError) as error:
        raise ValueError(f"--calib-subset {subset}: the task cannot load it from its data ({error})") from None
    dataset = task.dataset(subset)
    available = len(dataset)
    if available < samples:
        raise ValueError(f"--calib-samples {samples}: the {subset} subset has only {available} samples; "
                         f"ask for at most {available}")
    picks = np.random.RandomState(seed).choice(available, samples, replace=False)
    picks = picks[np.argsort([dataset.num_tokens(i) for i in picks], kind="stable")]  # little padding per batch
    device = next(model.parameters()).device
    head = _classification_head(task, model)
    forwards, batch, longest = [], [], 0
    for index in picks:
        length = int(dataset.num_tokens(index))
        if batch and max(longest, length) * (len(batch) + 1) > BATCH_TOKENS:
            forwards.append(_forward(model, dataset, batch, device, head))
            batch, longest = [], 0
        batch.append(int(index))
        longest = max(longest, length)
    forwards.append(_forward(model, dataset, batch, device, head))
    return forwards


def _forward(model, dataset, indices, device, head):
    sample = dataset.collater([dataset[i] for i in indices])
    net_input = {k: v.to(device) if torch.is_tensor(v) else v for k, v in sample["net_input"].items()}
    extra = {"features_only": True, "classification_head_name": head} if head else {}
    return partial(model, **net_input, **extra)


def _classification_head(task, model):
    """The head the sentence-prediction criterion would use (None for other tasks)."""
    heads = getattr(model, "classification_heads", None)
    if not heads:
        return None
    name = getattr(task.cfg, "classification_head_name", None)
    return name if name in heads else next(iter(heads))


def compress_with_calibration(task, model, spec, cfg):
    """compress_calibrated on the task's calibration batches, as the --calib-* flags of ``cfg`` say; (report, masks,
    the compressed line's calibration figures)."""
    samples = value(cfg, "calib_samples")
    started = time.monotonic()
    forwards = (calibration_forwards(task, model, value(cfg, "calib_subset"), samples, value(cfg, "calib_seed"))
                if spec.needs_calibration_data else [])  # magnitude 2:4 reads no data
    report, masks, summary = compress_calibrated(model, spec, forwards)
    figures = {
        "subset": value(cfg, "calib_subset"), "samples": samples if forwards else 0, "batches": len(forwards),
        "stages": summary.stages, "seconds": round(time.monotonic() - started, 2),
        "uncalibrated": len(summary.uncalibrated),
    }
    return report, masks, figures
