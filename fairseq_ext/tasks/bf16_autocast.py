"""``--autocast-bf16``: mixed-precision training for CPUs with bf16 matrix units (AMX, AVX512-BF16).

Stock fairseq's ``--bf16`` implies ``--tpu`` and keeps bf16 weights; on a CPU what pays is ``torch.autocast``:
the forward pass and the loss run with bf16 matmuls, while the weights, their gradients and the optimizer state
stay fp32, so there is no loss scaling and every checkpoint is an ordinary fp32 one. Only the criterion call
(forward + loss) runs under autocast, as torch recommends; fairseq's own train step runs the backward pass after
it, outside. Validation during training runs under autocast too, so the validation curve measures the model being
trained; fairseq-validate of such a checkpoint (which keeps the flag in its saved config) stays fp32.

fairseq's criteria take log-probabilities through ``utils.log_softmax(x.float())``, so the loss itself is fp32.
"""
import logging
from dataclasses import dataclass, field

import torch
from fairseq.dataclass import FairseqDataclass

logger = logging.getLogger(__name__)
AUTOCAST_ON = "--autocast-bf16: forward and loss under torch.autocast(%s, bfloat16), fp32 weights and optimizer state"


@dataclass
class AutocastConfig(FairseqDataclass):
    autocast_bf16: bool = field(
        default=False,
        metadata={"help": "train and validate under torch.autocast to bfloat16 (forward and loss; fp32 weights, "
                          "gradients and optimizer state, no loss scaling): fast on CPUs with AMX or AVX512-BF16. "
                          "Not with --fp16/--bf16/--amp"},
    )


class _UnderAutocast:
    """A criterion whose call (the forward pass and the loss) runs under autocast; anything else is the criterion's."""

    def __init__(self, criterion, device_type):
        self._criterion = criterion
        self._device_type = device_type

    def __call__(self, *args, **kwargs):
        with torch.autocast(self._device_type, dtype=torch.bfloat16):
            return self._criterion(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._criterion, name)


def autocast_device(model):
    """The autocast device type for ``model``; refuses weights that are not fp32 (--fp16/--bf16 cast them)."""
    param = next(model.parameters())
    if param.dtype != torch.float32:
        raise ValueError(f"--autocast-bf16 keeps fp32 weights and casts per operation; these weights are "
                         f"{param.dtype} (--fp16, --bf16 or --memory-efficient-*): drop one or the other")
    return param.device.type


class AutocastTaskMixin:
    """Put among the bases of a stock task class, before it; ``cfg`` must include AutocastConfig's field."""

    _training = False  # set by build_model: fairseq-train builds with from_checkpoint=False
    _announced = False

    def build_model(self, cfg, from_checkpoint=False):
        # A checkpoint trained with --autocast-bf16 keeps the flag in its saved task config, which fairseq-validate
        # reuses: evaluating it stays fp32 unless the run trains.
        self._training = not from_checkpoint
        return super().build_model(cfg, from_checkpoint)

    def _criterion_for(self, model, criterion):
        if not (self._training and getattr(self.cfg, "autocast_bf16", False)):
            return criterion
        device_type = autocast_device(model)
        if not self._announced:
            logger.info(AUTOCAST_ON, device_type)
            self._announced = True
        return _UnderAutocast(criterion, device_type)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        criterion = self._criterion_for(model, criterion)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def valid_step(self, sample, model, criterion):
        return super().valid_step(sample, model, self._criterion_for(model, criterion))
