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


class LeanBeamSearch(BeamSearch):
    """fairseq's BeamSearch step without adding the beams' scores to the whole (beams x vocabulary) table: each
    beam's best 2 x beam tokens are the only ones that can be among the sentence's best 2 x beam, so the scores are
    added to those only. The candidates' values are the same sums as stock (same operands, same order)."""

    def step(self, step, lprobs, scores, prev_output_tokens=None, original_batch_idxs=None, candidate_multiple=2):
        if step == 0:
            return super().step(step, lprobs, scores, prev_output_tokens, original_batch_idxs, candidate_multiple)
        sentences, beam_size, vocab_size = lprobs.size()
        count = min(candidate_multiple * beam_size, beam_size * vocab_size - 1)  # stock's count
        per_beam = min(count, vocab_size)
        beam_scores, beam_tokens = torch.topk(lprobs, k=per_beam, dim=2)
        totals = beam_scores + scores[:, :, step - 1].unsqueeze(-1)
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
