"""Calibrated one-shot compression of a whole model: SparseGPT, Wanda and GPTQ, layer after layer.

The model's nn.Linear layers are calibrated in the order the forward pass reaches them, a stage at a time: a stage
is one element of an nn.ModuleList (a transformer layer) or a Linear outside any (an output projection, a
classification head). For each stage the calibration batches run through the model, whose earlier stages are
already compressed, up to the point where every Linear of the stage has seen its input (the pass stops there); the
inputs' second moments H = X^T X are summed, and each Linear of the stage is compressed from its own H. So a layer
is fitted to the inputs it will get from the compressed layers below it, the encoder's before the decoder's, which
is how the papers calibrate ("sequential"). A Linear that shares its input with an earlier one of the stage (the
q, k and v projections) shares its H.

The weights that no forward hook can see are compressed as without calibration (magnitude masks of the layer,
round-to-nearest): pure embedding look-ups (an embedding tied to an output projection is calibrated there) and a
Linear the passes never reach. Finally compress() stores everything through the one contract: the calibrated
weights are already exactly on their grid (gptq.py), so it changes none of them.

Pure torch: the caller supplies the calibration batches as callables that run the model (``forwards``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .accounting import CompressionReport, compress
from .gptq import DAMPING, Grid, solve_
from .methods import PRUNE_METHODS, QUANT_METHODS
from .module_surgery import disable_attention_fast_path
from .pruning import magnitude_masks, n_of_m_keep, prunable_weights
from .quantization import quantizable_weights
from .spec import CompressionSpec

logger = logging.getLogger(__name__)

N_OF_M = {"2:4": (2, 4)}
# An output projection tied to the embedding is also a look-up table, whose error counts row by row, unweighted by
# any input: its H gets as much identity as its mean diagonal (on make demo's d2_h256, test NLL at 3 bits: 1.671
# with GPTQ's 1% damping, 1.647 with this, 1.688 round-to-nearest; dense 1.561).
LOOKUP_DAMPING = 1.0


@dataclass
class CalibrationSummary:
    stages: int = 0  # stages that needed calibration
    seconds: float = 0.0  # calibration passes and solves, not the final compress()
    calibrated: list[str] = field(default_factory=list)  # weights fitted with calibration
    uncalibrated: list[str] = field(default_factory=list)  # weights compressed as without calibration


class _StageInputsSeen(Exception):
    """Raised inside the model once every Linear of the stage has its input: the rest of the pass is not needed."""


def compress_calibrated(
    model: nn.Module, spec: CompressionSpec, forwards: Sequence[Callable[[], object]],
) -> tuple[CompressionReport, dict[str, torch.Tensor], CalibrationSummary]:
    """Compress ``model`` in place as ``spec`` says, calibrating on ``forwards`` (each runs one batch through the
    model). Returns compress()'s report and keep masks, and what calibration did."""
    spec.validate()
    if not forwards and spec.needs_calibration_data:
        raise ValueError("calibrated compression needs at least one calibration batch")
    started = time.monotonic()
    names = _first_names(model)
    prunable = prunable_weights(model, spec.prune_embeddings) if spec.prunes else {}
    calibrated_pruning = PRUNE_METHODS[spec.prune_method].calibrated
    calibrated_quantization = QUANT_METHODS[spec.quant_method].calibrated
    gptq = quantizable_weights(model, spec.quantize_embeddings) if spec.quantizes and calibrated_quantization else {}
    # Uncalibrated masks are chosen before any weight moves (and are GPTQ's fixed masks); the others stage by stage.
    masks = {} if calibrated_pruning else _uncalibrated_masks(prunable, spec)
    grid = Grid(spec.bits, spec.scheme, spec.granularity, spec.group_size) if gptq else None
    needs_inputs = set(gptq) | (set(prunable) if calibrated_pruning else set())
    summary = CalibrationSummary()
    done = set()
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}

    was_training = model.training
    memo = _LayerOutputs()
    switched = [m for m in model.modules() if hasattr(m, "q_proj") and hasattr(m, "skip_embed_dim_check")
                and not m.skip_embed_dim_check]
    disable_attention_fast_path(model)  # the fused path reads the projections' weights: their hooks never fire
    model.eval()
    try:
        all_stages = _stages(model, forwards[0]) if needs_inputs else {}
        layers = dict(model.named_modules())
        stages = [(name, [[linear for linear in step if names[id(linear.weight)] in needs_inputs] for step in steps])
                  for name, steps in all_stages.items()]
        stages = [(name, [step for step in steps if step]) for name, steps in stages]
        stages = [(name, steps) for name, steps in stages if steps]
        order = list(all_stages)
        for number, (stage_name, steps) in enumerate(stages, start=1):
            stage_started = time.monotonic()
            # Every layer before this stage is final: each pass takes its output from the pass that first computed it.
            for earlier in order[:order.index(stage_name)]:
                memo.remember(layers[earlier])
            for step in steps:  # a step's inputs come from the stage's earlier steps, compressed already
                moments = _second_moments(model, step, forwards, memo)
                for linear in step:
                    name = names[id(linear.weight)]
                    if name in done:
                        continue
                    done.add(name)
                    if moments.get(linear) is None:
                        continue  # the passes never reached it: compressed as without calibration
                    damping = LOOKUP_DAMPING if id(linear.weight) in lookups else DAMPING
                    keep = _solve(linear.weight, moments[linear], spec, masks.get(name), prune=name in prunable,
                                  grid=grid if name in gptq else None, damping=damping)
                    if keep is not None:
                        masks[name] = keep
                    summary.calibrated.append(name)
            summary.stages += 1
            logger.info("calibration stage %d/%d (%s): %d weights in %d steps, %.1f s", number, len(stages), stage_name,
                        sum(map(len, steps)), len(steps), time.monotonic() - stage_started)
    finally:
        memo.forget()
        for module in switched:
            module.skip_embed_dim_check = False
        model.train(was_training)
    summary.uncalibrated = sorted((set(prunable) | set(gptq)) - set(summary.calibrated))
    masks.update(_uncalibrated_masks({name: prunable[name] for name in prunable if name not in masks}, spec))
    summary.seconds = time.monotonic() - started
    report, masks = compress(model, spec, masks=masks or None)
    return report, masks, summary


def _first_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> its first name (its first state_dict key, as the rest of the package names it)."""
    names = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), name)
    return names


def _uncalibrated_masks(prunable: dict[str, nn.Parameter], spec: CompressionSpec) -> dict[str, torch.Tensor]:
    """Masks chosen by magnitude: with spec.scope (or 2:4 by magnitude) for the magnitude method; for a calibrated
    method, per layer, where a weight could not be calibrated."""
    if not prunable:
        return {}
    if spec.prune_pattern != "unstructured":
        return {name: n_of_m_keep(weight.detach().abs(), *N_OF_M[spec.prune_pattern]) for name, weight in prunable.items()}
    scope = "layer" if PRUNE_METHODS[spec.prune_method].calibrated else spec.scope
    return magnitude_masks(prunable, spec.sparsity, scope)


def _solve(weight: nn.Parameter, hessian: torch.Tensor, spec: CompressionSpec, magnitude_keep, *, prune: bool,
           grid: Grid | None, damping: float) -> torch.Tensor | None:
    """Compress one calibrated weight in place; its keep mask (None when it is not pruned)."""
    pruning = None
    if prune:
        method = PRUNE_METHODS[spec.prune_method].function()
        pruning = method(weight, hessian, spec.sparsity, N_OF_M.get(spec.prune_pattern), magnitude_keep)
    if grid is None and (pruning is None or pruning.keep is not None):
        return pruning.keep if pruning is not None else None  # a mask alone: no weight to update
    return solve_(weight.data, hessian, pruning=pruning, grid=grid, damping=damping, act_order=True)


def _stages(model: nn.Module, probe: Callable[[], object]) -> dict[str, list[list[nn.Linear]]]:
    """The model's Linear layers grouped into stages (module docstring) by name, in the order one pass first calls
    them; each stage as its steps: consecutive Linears fed the very same tensor (q, k and v) form one step."""
    layer_names = {f"{name}.{child}" if name else child
                   for name, module in model.named_modules() if isinstance(module, nn.ModuleList)
                   for child, _ in module.named_children()}
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    calls: list[tuple[nn.Linear, bool]] = []  # (Linear, fed the tensor the previous call got)
    previous = [None]

    def record(module, args):
        calls.append((module, args[0] is previous[0]))
        previous[0] = args[0]

    handles = [m.register_forward_pre_hook(record) for m in linears.values()]
    try:
        with torch.no_grad():
            probe()
    finally:
        for handle in handles:
            handle.remove()
    stage_of = {}
    for name, linear in linears.items():
        owners = [layer for layer in layer_names if name.startswith(layer + ".")]
        stage_of[linear] = max(owners, key=len) if owners else name
    stages: dict[str, list[list[nn.Linear]]] = {}
    placed = set()
    for linear, shares_input in calls:
        if linear in placed:
            continue
        placed.add(linear)
        steps = stages.setdefault(stage_of[linear], [])
        if shares_input and steps:
            steps[-1].append(linear)
        else:
            steps.append([linear])
    return stages


class _LayerOutputs:
    """Outputs of the finished layers, per calibration batch: a layer whose weights, and those of every layer
    before it, are final gives the same output for a batch in every later pass, so it is computed once. Without
    this each stage's pass would recompute the whole model below it (seven full passes' work for 6+6 layers)."""

    def __init__(self):
        self.batch = 0
        self.outputs: dict[tuple[int, int], object] = {}
        self.layers: list[nn.Module] = []

    def remember(self, layer: nn.Module) -> None:
        if not isinstance(layer, nn.Linear) and layer not in self.layers:
            compute = layer.forward

            def forward(*args, _layer=id(layer), **kwargs):
                key = (_layer, self.batch)
                if key not in self.outputs:
                    self.outputs[key] = compute(*args, **kwargs)
                return self.outputs[key]

            layer.forward = forward
            self.layers.append(layer)

    def forget(self) -> None:
        for layer in self.layers:
            del layer.forward  # the class's forward again
        self.layers, self.outputs = [], {}


def _second_moments(model: nn.Module, stage: list[nn.Linear], forwards, memo: _LayerOutputs
                    ) -> dict[nn.Linear, torch.Tensor | None]:
    """Sum of x x^T over every calibration token reaching each Linear of the stage (None where none did)."""
    moments: dict[nn.Linear, torch.Tensor | None] = {linear: None for linear in stage}
    shares: dict[nn.Linear, nn.Linear] = {}  # a Linear fed the very tensor an earlier one got -> that one
    seen: dict[nn.Linear, torch.Tensor] = {}

    def accumulate(linear, args):
        x = args[0]
        owner = next((other for other, tensor in seen.items() if tensor is x), None)
        seen[linear] = x
        if owner is not None:
            shares.setdefault(linear, owner)
        if linear not in shares:
            rows = x.detach().reshape(-1, x.shape[-1]).to(torch.float32)
            product = rows.T @ rows
            moments[linear] = product if moments[linear] is None else moments[linear].add_(product)
        if len(seen) == len(stage):
            raise _StageInputsSeen

    handles = [linear.register_forward_pre_hook(accumulate) for linear in stage]
    try:
        with torch.no_grad():
            for batch, forward in enumerate(forwards):
                seen.clear()
                memo.batch = batch
                try:
                    forward()
                except _StageInputsSeen:
                    pass
    finally:
        for handle in handles:
            handle.remove()
    for linear, owner in shares.items():
        moments[linear] = moments[owner]
    return moments
