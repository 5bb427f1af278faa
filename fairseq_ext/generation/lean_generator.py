"""fairseq's SequenceGenerator with the lean decoder and a lean beam-search step in place of its model wrapper and
its search: the generation loop (lengths, --lenpen, --unkpen, --nbest, --prefix-size, finished sentences leaving
the batch) stays fairseq's own, so the hypotheses and scores are the stock ones.
"""
import torch
from fairseq.search import BeamSearch
from fairseq.sequence_generator import EnsembleModel, SequenceGenerator, SequenceGeneratorWithAlignment

from .lean_decoder import DecoderCache, LeanDecoder, unsupported

CACHE_KEY = "fairseq_ext_lean_decoder"


class LeanEnsembleModel(EnsembleModel):
    """fairseq's ensemble interface over one encoder-decoder model, decoding with :class:`LeanDecoder`."""

    def __init__(self, models, beam_size):
        super().__init__(models)
        self.beam_size = beam_size
        self.lean_decoder = LeanDecoder(models[0].decoder)

    def reorder_encoder_out(self, encoder_outs, new_order):
        # The decoder reads the encoder output at the first step only, one row per sentence; after that its
        # cache holds what it needs (reordered in reorder_incremental_state). Nothing to gather here, ever.
        return encoder_outs

    def reorder_incremental_state(self, incremental_states, new_order):
        incremental_states[0][CACHE_KEY].reorder(new_order)

    def forward_decoder(self, tokens, encoder_outs, incremental_states, temperature=1.0):
        state = incremental_states[0]  # a fresh dict for every batch the generator decodes
        if CACHE_KEY not in state:
            state[CACHE_KEY] = DecoderCache(self.beam_size)
        return self.lean_decoder.step(tokens, encoder_outs[0], state[CACHE_KEY], state, temperature)


def top_by_chunks(x, k, chunk=64):
    """``torch.topk(x, k, dim=1)`` of a 2-D ``x`` in about a fifth of the time for a large second dimension: the k
    largest values lie in the k chunks with the largest maxima, so only those chunks are searched. Same values and
    positions (up to the order of equal values, which topk does not define either)."""
    rows, width = x.shape
    if width < 8 * k * chunk:
        return torch.topk(x, k, dim=1)
    full = width - width % chunk
    maxima = x[:, :full].view(rows, -1, chunk).amax(dim=2)
    if full < width:
        maxima = torch.cat([maxima, x[:, full:].amax(dim=1, keepdim=True)], dim=1)
    chunks = torch.topk(maxima, k, dim=1).indices
    columns = (chunks.unsqueeze(2) * chunk + torch.arange(chunk, device=x.device)).view(rows, -1)
    outside = columns >= width  # the short last chunk
    values = x.gather(1, columns.clamp(max=width - 1)).masked_fill_(outside, float("-inf"))
    best, where = torch.topk(values, k, dim=1)
    return best, columns.gather(1, where)


class LeanBeamSearch(BeamSearch):
    """fairseq's BeamSearch step without adding the beams' scores to the whole (beams x vocabulary) table: each
    beam's best 2 x beam tokens are the only ones that can be among the sentence's best 2 x beam, so the scores are
    added to those only, and each beam's best are found chunk by chunk (top_by_chunks). The candidates' values are
    the same sums as stock (same operands, same order)."""

    def step(self, step, lprobs, scores, prev_output_tokens=None, original_batch_idxs=None, candidate_multiple=2):
        sentences, beam_size, vocab_size = lprobs.size()
        if step == 0:  # all beams are the same hypothesis: the first beam's tokens only, as stock
            count = min(candidate_multiple * beam_size, vocab_size - 1)
            best_scores, tokens = top_by_chunks(lprobs[:, 0, :], count)
            return best_scores, tokens, torch.zeros_like(tokens)
        count = min(candidate_multiple * beam_size, beam_size * vocab_size - 1)  # stock's count
        per_beam = min(count, vocab_size)
        beam_scores, beam_tokens = top_by_chunks(lprobs.reshape(sentences * beam_size, vocab_size), per_beam)
        totals = beam_scores.view(sentences, beam_size, per_beam) + scores[:, :, step - 1].unsqueeze(-1)
        best_scores, best = torch.topk(totals.view(sentences, -1), k=count)
        beams = torch.div(best, per_beam, rounding_mode="trunc")
        tokens = torch.gather(beam_tokens.view(sentences, -1), 1, best)
        return best_scores, tokens, beams


def why_not_lean(generator, models):
    """Why the lean decoder cannot run ``generator``'s decoding, or None when it can."""
    if isinstance(generator, SequenceGeneratorWithAlignment):
        return "--print-alignment (fairseq's SequenceGeneratorWithAlignment)"
    if type(generator) is not SequenceGenerator:
        return f"{type(generator).__name__}, a generator other than fairseq's SequenceGenerator"
    if len(models) != 1:
        return f"an ensemble of {len(models)} models"
    model = models[0]
    if not hasattr(model, "encoder") or not generator.model.has_incremental_states():
        return f"{type(model).__name__} is not an encoder-decoder with incremental decoding"
    return unsupported(model.decoder)


def make_lean(generator, models):
    """Put the lean decoder (and, for beam search, the lean beam step) into a stock ``generator``, in place.
    Returns None when done, or the reason it was not (the generator is then left as it was)."""
    reason = why_not_lean(generator, models)
    if reason is not None:
        return reason
    generator.model = LeanEnsembleModel(models, generator.beam_size).eval()
    if type(generator.search) is BeamSearch:
        generator.search = LeanBeamSearch(generator.tgt_dict)
    return None
