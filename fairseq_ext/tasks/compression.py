"""What a ``compressed_*`` task adds to its stock task: the fairseq hooks that run fairseq_ext.compression.

Two modes, told apart by how fairseq builds the model:

- Evaluation (fairseq-generate, -validate, -interactive, hub loading). fairseq builds the model with
  ``build_model(cfg, from_checkpoint=True)`` and then calls ``model.load_state_dict(checkpoint weights)``. A
  load_state_dict post-hook compresses the model right after that, in place and once, before any decoding or
  scoring, and logs one ``compressed {json}`` line. With ``--int8-kernels`` or ``--int4-kernels`` the Linears and
  Embeddings are built on the meta device and a pre-hook gives them the checkpoint's own tensors (held once, not
  twice, while the load converts them); a packed file for ``--int4-kernels`` goes further: the pre-hook makes int4
  modules of the file's codes. A packed file's weights are compressed already: with no compression flags its
  header gives the line's figures (what the file holds), and flags that disagree with it are refused. The
  checkpoint may come from the stock task: generate and interactive use the task named on the command line,
  whatever task trained the weights.
- Training (fairseq-train builds with ``from_checkpoint=False``). Pruning follows ``--prune-schedule``, a pure
  function of fairseq's update count; the masks are re-applied after every optimizer step, so pruned weights are
  exactly zero in every checkpoint. Masks are not stored: on the first step of a process (a fresh start or a resume
  from checkpoint_last.pt) they are recomputed by magnitude at the scheduled sparsity, which on a pruned checkpoint
  selects exactly its zeros again (the core prunes exact counts and breaks ties by position), so a resumed run
  continues with the masks of the uninterrupted one. ``--quant-aware`` runs each forward/backward (and validation)
  with fake-quantized weights; the optimizer updates the float weights (straight-through estimator), which are what
  the checkpoints hold.

In both modes ``reduce_metrics`` adds ``sparsity`` and ``model_mb`` to fairseq's train/valid logs, for any
criterion (so no criterion wrappers are needed).
"""
import functools
import json
import logging
import math

from fairseq.logging import metrics

from fairseq_ext.checkpoint_loading import take_packed_header
from fairseq_ext.compression import (
    CompressionSpec,
    QuantizationAwareTraining,
    account,
    apply_masks,
    compress,
    magnitude_masks,
    prunable_weights,
    quantizable_weights,
)
from fairseq_ext.compression.int4_state import load_int4_state
from fairseq_ext.compression.meta_build import assign_meta_parameters, weights_on_meta
from fairseq_ext.compression.runtime import return_large_frees_to_the_os, reuse_large_frees, runtime_bytes

from .calibration import compress_with_calibration
from .compression_checks import (
    check_compression_config, check_finite_weights, check_group_size_fits, check_packed_file,
    refuse_calibration_in_training, refuse_in_training,
)
from .compression_config import compression_on, compression_spec, pruning_on, pruning_schedule, speed_flags, value
from .inference_speed import apply_speed_flags, guard_cpu_fp32, int4_figures

logger = logging.getLogger(__name__)

MB = 1e6  # the core's reports count decimal megabytes


def compressed_line_figures(report, model, spec=None, calibration=None):
    """The figures of the one ``compressed {json}`` log line that sweep scripts grep for. A calibrated compressor
    adds its methods and ``calibration`` (subset, samples, batches, stages, seconds); the default line is unchanged."""
    figures = {
        "sparsity": round(report.sparsity, 4),
        "bits": report.bits,
        "compressed_mb": round(report.total_bytes / MB, 3),
        "fp32_mb": round(report.fp32_bytes / MB, 3),
        "ratio": round(report.ratio, 2),
        "params": sum(p.numel() for p in model.parameters()),
    }
    if calibration is not None:
        figures.update(prune_method=spec.prune_method if spec.prunes else "none",
                       prune_pattern=spec.prune_pattern if spec.prunes else "none",
                       quant_method=spec.quant_method if spec.quantizes else "none", calibration=calibration)
    return figures


def _take_checkpoint_tensors(model, state_dict, *args):
    assign_meta_parameters(model, state_dict)


def _built(model, incompatible_keys):
    """The kernels' model is built: the decode that follows reuses its large blocks (runtime.reuse_large_frees)."""
    reuse_large_frees()


class CompressionTaskMixin:
    """Put first among the bases of a stock task class; ``cfg`` must include CompressionConfig's fields."""

    def __init__(self, cfg, *args, **kwargs):
        check_compression_config(cfg)  # before any data is read: bad flags fail at start-up (the spec's too)
        self._schedule = pruning_schedule(cfg) if pruning_on(cfg) else None
        super().__init__(cfg, *args, **kwargs)
        self._trained_model = None  # set in training mode only
        self._masks = None  # training: keep masks in force ({} = none); None until the first step
        self._mask_sparsity = None
        self._figures = None  # {"sparsity", "model_mb"} for the logs; None = recompute

    # ---- evaluation: compress once the checkpoint's weights are in ----

    def build_model(self, cfg, from_checkpoint=False):
        header = take_packed_header() if from_checkpoint else None
        int4_kernels = value(self.cfg, "int4_kernels")
        if header is not None:
            check_packed_file(header, compression_spec(self.cfg), int4_kernels)
        kernels = value(self.cfg, "int8_kernels") or int4_kernels
        if not (from_checkpoint and kernels):
            model = super().build_model(cfg, from_checkpoint)
        else:  # the kernels' model is made from the checkpoint's own tensors or codes: no float32 copy of them
            return_large_frees_to_the_os()
            with weights_on_meta():
                model = super().build_model(cfg, from_checkpoint)
            if header is not None and int4_kernels:
                model.register_load_state_dict_pre_hook(functools.partial(self._build_int4_from_codes, header))
                model.register_load_state_dict_post_hook(_built)
                return model
            model.register_load_state_dict_pre_hook(_take_checkpoint_tensors)
        check_group_size_fits(self.cfg, model)
        if from_checkpoint:
            model.register_load_state_dict_post_hook(functools.partial(self._compress_loaded_model, header))
            if kernels:
                model.register_load_state_dict_post_hook(_built)  # after the kernels' conversion
        else:
            refuse_in_training(speed_flags(self.cfg))
            refuse_calibration_in_training(self.cfg)
            self._trained_model = model
        return model

    def _compress_loaded_model(self, header, model, incompatible_keys):
        spec = compression_spec(self.cfg)
        calibration = None
        if header is not None and not spec.enabled:  # a packed file, compressed already: its header has the figures
            spec = CompressionSpec.from_dict(header["spec"])
            figures = self._packed_figures(header, model)
        else:
            if spec.enabled:
                check_finite_weights(model)
            if spec.calibrated:
                report, _, calibration = compress_with_calibration(self, model, spec, self.cfg)
            else:
                report = compress(model, spec)[0] if spec.enabled else account(model, spec)
            self._figures = {"sparsity": report.sparsity, "model_mb": report.total_bytes / MB}
            figures = compressed_line_figures(report, model, spec, calibration)
        figures.update(apply_speed_flags(speed_flags(self.cfg), model, spec))  # after, in place
        figures["runtime_mb"] = round(runtime_bytes(model) / MB, 3)  # the weights as they run: float ones too
        logger.info("compressed %s", json.dumps(figures))

    def _packed_figures(self, header, model):
        """The ``compressed`` line's figures of a packed file: what its header says it holds."""
        parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
        self._figures = {"sparsity": header["achieved_sparsity"], "model_mb": header["accounted_bytes"] / MB}
        return {
            "sparsity": round(header["achieved_sparsity"], 4), "bits": header["spec"]["bits"],
            "compressed_mb": round(header["accounted_bytes"] / MB, 3), "fp32_mb": round(header["fp32_bytes"] / MB, 3),
            "ratio": round(header["fp32_bytes"] / header["accounted_bytes"], 2),
            "params": sum(math.prod(r["shape"]) for r in header["tensors"] if r["name"] in parameters),
        }

    def _build_int4_from_codes(self, header, model, state_dict, *args):
        figures = {**self._packed_figures(header, model), "from_codes": True}  # names before the swap
        try:
            replaced = load_int4_state(model, state_dict)
        except ValueError as error:
            raise ValueError(f"--int4-kernels: {error}") from None
        figures.update(int4_figures(model, replaced))
        guard_cpu_fp32(model, "--int4-kernels")
        figures["runtime_mb"] = round(runtime_bytes(model) / MB, 3)
        logger.info("compressed %s", json.dumps(figures))

    # ---- training: schedule, masks after every step, quantization-aware passes ----

    def _unwrapped(self, model):
        # Mask names must not depend on fairseq's distributed wrapper ("module." prefixes): use the model we built.
        return self._trained_model if self._trained_model is not None else model

    def _prunable(self, model):
        return prunable_weights(self._unwrapped(model), include_embeddings=bool(value(self.cfg, "prune_embeddings")))

    def _prune_to(self, model, sparsity):
        """(Re)compute magnitude masks at ``sparsity`` on the current weights, and zero what they prune."""
        weights = self._prunable(model)
        self._masks = magnitude_masks(weights, sparsity, value(self.cfg, "prune_scope")) if sparsity > 0 else {}
        apply_masks(weights, self._masks)
        self._mask_sparsity = sparsity
        self._figures = None

    def _quantization_aware(self, model):
        weights = quantizable_weights(self._unwrapped(model), include_embeddings=not value(self.cfg, "quant_skip_embeddings"))
        masks = {name: mask for name, mask in (self._masks or {}).items() if name in weights}
        return QuantizationAwareTraining(
            weights, int(value(self.cfg, "quant_bits")), value(self.cfg, "quant_scheme"),
            value(self.cfg, "quant_granularity"), masks=masks, group_size=compression_spec(self.cfg).group_size,
        )

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if pruning_on(self.cfg) and self._mask_sparsity is None:
            # First step of this process: a fresh start, or a resume whose checkpoint holds the zeros.
            self._prune_to(model, self._schedule.sparsity_at(update_num))
        if not value(self.cfg, "quant_aware"):
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        with self._quantization_aware(model):  # backward runs inside: gradients at the quantized weights
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def optimizer_step(self, optimizer, model, update_num):
        super().optimizer_step(optimizer, model, update_num)
        if not pruning_on(self.cfg):
            return
        apply_masks(self._prunable(model), self._masks or {})  # the step moved pruned weights (momentum)
        sparsity = self._schedule.sparsity_at(update_num + 1)  # this step completes update update_num + 1
        if sparsity != self._mask_sparsity:
            self._prune_to(model, sparsity)

    def valid_step(self, sample, model, criterion):
        if self._trained_model is None or not value(self.cfg, "quant_aware"):
            return super().valid_step(sample, model, criterion)
        with self._quantization_aware(model):  # validate what quantization-aware training optimises
            return super().valid_step(sample, model, criterion)

    # ---- logs ----

    def _figure(self, key):
        if self._figures is None and self._trained_model is not None:
            sparsity = self._mask_sparsity or 0.0
            spec = compression_spec(self.cfg, sparsity=sparsity)
            report = account(self._trained_model, spec, self._masks if sparsity > 0 else None)
            self._figures = {"sparsity": report.sparsity, "model_mb": report.total_bytes / MB}
        return round(self._figures[key], 4) if self._figures else 0.0

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        if compression_on(self.cfg):
            # Derived meters are read when fairseq prints a record, so each record shows the figures at its own
            # update (an average over the logging interval would blur a schedule that is moving).
            metrics.log_derived("sparsity", lambda meters: self._figure("sparsity"), priority=250)
            metrics.log_derived("model_mb", lambda meters: self._figure("model_mb"), priority=251)
