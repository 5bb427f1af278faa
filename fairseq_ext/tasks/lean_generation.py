"""``compressed_translation`` decodes with fairseq_ext.generation's lean decoder; ``--stock-generator`` turns it off.

``build_generator`` builds fairseq's own generator from the generation flags, then swaps in the lean decoder and
beam step (fairseq_ext.generation.lean_generator). When the model or the flags need something the lean decoder
does not implement, the stock generator decodes and one log line says why.
"""
import logging
from dataclasses import dataclass, field

from fairseq.dataclass import FairseqDataclass

from fairseq_ext.generation.lean_generator import make_lean

logger = logging.getLogger(__name__)


@dataclass
class LeanGenerationConfig(FairseqDataclass):
    stock_generator: bool = field(
        default=False,
        metadata={"help": "decode with fairseq's own SequenceGenerator instead of the plugin's lean, beam-aware "
                          "decoder (same hypotheses and scores, slower)"},
    )


class LeanGenerationTaskMixin:
    """Put among the bases of a stock task class, before it; ``cfg`` must include LeanGenerationConfig's field."""

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **kwargs):
        generator = super().build_generator(models, args, seq_gen_cls, extra_gen_cls_kwargs, **kwargs)
        if getattr(self.cfg, "stock_generator", False):
            logger.info("generator: fairseq's SequenceGenerator (--stock-generator)")
            return generator
        reason = make_lean(generator, models)
        if reason is None:
            logger.info("generator: lean beam-aware decoder (--stock-generator for fairseq's own)")
        else:
            logger.info("generator: fairseq's %s, because the lean decoder does not support %s",
                        type(generator).__name__, reason)
        return generator
