"""``compressed_translation``, ``compressed_masked_lm``, ``compressed_sentence_prediction``: each the stock fairseq
task with CompressionConfig's and AutocastConfig's flags mixed into its config and CompressionTaskMixin's and
AutocastTaskMixin's hooks in front of its methods; ``compressed_translation`` also decodes with the lean decoder
(LeanGenerationTaskMixin, ``--stock-generator`` to turn it off). With every flag at its default they compute what
the stock tasks compute.
"""
from dataclasses import dataclass

from fairseq.tasks import register_task
from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask
from fairseq.tasks.sentence_prediction import SentencePredictionConfig, SentencePredictionTask
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from .bf16_autocast import AutocastConfig, AutocastTaskMixin
from .compression import CompressionTaskMixin
from .compression_config import CompressionConfig
from .lean_generation import LeanGenerationConfig, LeanGenerationTaskMixin

# compressed task -> the stock task it extends (also used to tell users how to retarget a stock checkpoint).
COMPRESSED_VARIANT_OF = {}


def register_compressed(stock_name, stock_config, stock_task, extra_configs=(), extra_mixins=()):
    name = f"compressed_{stock_name}"
    configs = (stock_config, CompressionConfig, AutocastConfig, *extra_configs)
    config = dataclass(type(f"Compressed{stock_config.__name__}", configs, {}))
    task = type(f"Compressed{stock_task.__name__}", (CompressionTaskMixin, AutocastTaskMixin, *extra_mixins, stock_task),
                {"__doc__": __doc__})
    COMPRESSED_VARIANT_OF[name] = stock_name
    return register_task(name, dataclass=config)(task)


register_compressed("translation", TranslationConfig, TranslationTask,
                    extra_configs=(LeanGenerationConfig,), extra_mixins=(LeanGenerationTaskMixin,))
register_compressed("masked_lm", MaskedLMConfig, MaskedLMTask)
register_compressed("sentence_prediction", SentencePredictionConfig, SentencePredictionTask)
