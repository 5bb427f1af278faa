"""WMT En-Fr translation size grid: ``transformer_wmt_en_fr_d{depth}_h{width}`` on fairseq's stock
``transformer`` model.

Encoder and decoder both get ``depth`` layers of ``width`` (heads = width / 64, FFN = 4 x width);
everything else is fairseq's ``transformer_vaswani_wmt_en_fr_big`` (dropout 0.1, post-norm, ReLU,
sinusoidal positions) with one change: source, target and output embeddings are shared
(``share_all_embeddings``), as for a joined En-Fr BPE dictionary. Hence ``d6_h1024`` is
``transformer_vaswani_wmt_en_fr_big --share-all-embeddings`` exactly.

Pre-LayerNorm: ``--encoder-normalize-before --decoder-normalize-before`` (the stock flags work
here because the grid's default is False).
"""

from fairseq.models.transformer.transformer_legacy import transformer_vaswani_wmt_en_fr_big
from fairseq.utils import safe_getattr

from .grid import fill_size_defaults, register_grid

DEPTHS = [2, 4, 6, 8, 12]
WIDTHS = [128, 192, 256, 384, 512, 768, 1024, 1536, 2048]  # 128-384: the sizes a few CPU-minutes train best


def transformer_wmt_en_fr_grid_architecture(args, depth, width):
    fill_size_defaults(args, "encoder", depth, width)
    fill_size_defaults(args, "decoder", depth, width)
    args.share_all_embeddings = safe_getattr(args, "share_all_embeddings", True)
    transformer_vaswani_wmt_en_fr_big(args)


register_grid(
    "transformer", "transformer_wmt_en_fr_d{depth}_h{width}", DEPTHS, WIDTHS, transformer_wmt_en_fr_grid_architecture
)
