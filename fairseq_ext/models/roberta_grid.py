"""RoBERTa size grid: ``roberta_d{depth}_h{hidden}`` on fairseq's stock ``roberta`` model.

Heads = hidden / 64, FFN = 4 x hidden, everything else is fairseq's RoBERTa (``roberta_base``
minus its sizes). The grid is pre-LayerNorm by default: pre-LN trains stably at every depth
without a tuned warm-up (Xiong et al., 2020), so all 25 points can share one recipe.
``--post-norm`` restores stock RoBERTa's post-LayerNorm, so ``roberta_d12_h768 --post-norm`` is
``roberta_base``. Both keep RoBERTa's embedding LayerNorm (unlike fairseq's ``roberta_prenorm``).
An explicit ``--encoder-normalize-before`` wins over ``--post-norm``, as any command-line value does.
"""

import functools

from fairseq.models.roberta.model import base_architecture
from fairseq.utils import safe_getattr

from .grid import fill_size_defaults, register_grid

DEPTHS = [3, 6, 12, 18, 24]
HIDDENS = [256, 512, 768, 1024, 1536]


def with_post_norm_flag(add_args):
    """RobertaModel.add_args plus ``--post-norm``.

    Why a new flag: fairseq adds model args with ``argument_default=SUPPRESS`` and
    ``--encoder-normalize-before`` is store_true, so once a preset defaults it to True nothing on
    the command line can set it back to False. Wrapping the stock model's add_args (instead of
    registering a RobertaModel subclass) keeps the grid on the stock ``roberta`` model, so its
    checkpoints load anywhere fairseq does. Every roberta arch sees the flag; only the grid reads it.
    fairseq_ext.plugin installs it.
    """

    @functools.wraps(add_args)
    def add_args_with_post_norm(parser):
        add_args(parser)
        parser.add_argument(
            "--post-norm",
            action="store_true",
            help="roberta_d*_h* grid archs: post-LayerNorm (stock RoBERTa) instead of the grid's pre-LayerNorm",
        )

    return add_args_with_post_norm


def roberta_grid_architecture(args, depth, hidden):
    fill_size_defaults(args, "encoder", depth, hidden)
    args.encoder_normalize_before = safe_getattr(
        args, "encoder_normalize_before", not safe_getattr(args, "post_norm", False)
    )
    base_architecture(args)


register_grid("roberta", "roberta_d{depth}_h{width}", DEPTHS, HIDDENS, roberta_grid_architecture)
