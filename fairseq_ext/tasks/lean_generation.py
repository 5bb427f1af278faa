"""``compressed_translation`` decodes with fairseq_ext.generation's lean decoder; ``--stock-generator`` turns it off.

``build_generator`` lets fairseq build its generator from the generation flags, as fairseq's SequenceGenerator's
subclass LeanSequenceGenerator (fairseq_ext.generation.lean_generator). When the model or the flags need something
the lean decoder does not implement, fairseq's own generator decodes and one log line says why.
"""
import logging
from dataclasses import dataclass, field

from fairseq.dataclass import FairseqDataclass

from fairseq_ext.generation.lean_generator import LeanSequenceGenerator

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
        lean = not getattr(self.cfg, "stock_generator", False)
        why_not = None
        if lean and seq_gen_cls is None and getattr(args, "print_alignment", False):
            why_not = "--print-alignment (fairseq's SequenceGeneratorWithAlignment)"
        elif lean and seq_gen_cls is not None:
            why_not = f"a generator class chosen by the caller ({seq_gen_cls.__name__})"
        elif lean:
            seq_gen_cls = LeanSequenceGenerator
        generator = super().build_generator(models, args, seq_gen_cls, extra_gen_cls_kwargs, **kwargs)
        if not lean:
            logger.info("generator: fairseq's %s (--stock-generator)", type(generator).__name__)
            return generator
        why_not = why_not or getattr(generator, "lean_unsupported", None)
        if why_not is None:
            logger.info("generator: lean beam-aware decoder (--stock-generator for fairseq's own)")
        else:
            name = "SequenceGenerator" if isinstance(generator, LeanSequenceGenerator) else type(generator).__name__
            logger.info("generator: fairseq's %s, because the lean decoder does not support %s", name, why_not)
        return generator
