"""A tiny fairseq Transformer and a batch for it, for the in-process tests of the int8 and int4 kernels."""
import torch

from fairseq_ext.models.grid import build_for_vocab

TINY = dict(encoder_layers=2, decoder_layers=2, encoder_embed_dim=64, decoder_embed_dim=64,
            encoder_ffn_embed_dim=128, decoder_ffn_embed_dim=128, encoder_attention_heads=4,
            decoder_attention_heads=4, share_all_embeddings=True, dropout=0.0)


def tiny_transformer(seed=0, vocab=120):
    torch.manual_seed(seed)
    return build_for_vocab("transformer", vocab, **TINY).eval()


def sample(model, batch=3, length=7, seed=1):
    """(source tokens, source lengths, previous output tokens) of random words, each sequence ended / begun by eos."""
    generator = torch.Generator().manual_seed(seed)
    dictionary = model.encoder.dictionary
    src = torch.randint(dictionary.nspecial, len(dictionary), (batch, length), generator=generator)
    src[:, -1] = dictionary.eos()
    prev = torch.randint(dictionary.nspecial, len(dictionary), (batch, 5), generator=generator)
    prev[:, 0] = dictionary.eos()
    return src, torch.full((batch,), length), prev
