"""fairseq's SequenceGenerator with the lean decoder, a compact candidate table and a lean beam-search step in place
of its model wrapper and its search: the generation loop (lengths, --lenpen, --unkpen, --nbest, --prefix-size,
finished sentences leaving the batch) stays fairseq's own, so the hypotheses and scores are the stock ones.

The compact table. fairseq's loop passes over the whole (batch x beam, vocabulary) table of log-probabilities at
every step (a NaN mask, then the search), but beam search only ever keeps each beam's best 2 x beam tokens, and the
loop edits no column but pad, eos and unk (and, at the length limit, all but eos). So for plain beam search the
loop is handed a narrow table instead: the pad, eos and unk columns at their own indices, holding their own
log-probabilities, and in the other columns each row's best other tokens, whose ids the search maps back. Same
values, same candidates. With --prefix-size, an LM (--lm-path), --no-repeat-ngram-size or suppressed tokens,
which index the table by token id, the loop gets the full table.
"""
import torch
from fairseq.search import BeamSearch
from fairseq.sequence_generator import EnsembleModel, SequenceGenerator

from .lean_decoder import DecoderCache, LeanDecoder, unsupported

CACHE_KEY = "fairseq_ext_lean_decoder"


class CandidateTable:
    """Builds the compact table of one step (see the module's docstring) and remembers its columns' token ids."""

    def __init__(self, dictionary, beam_size):
        special = sorted({dictionary.pad(), dictionary.eos(), dictionary.unk()})
        self.width = special[-1] + 1 + 2 * beam_size
        self.special = torch.tensor(special)
        self.others = torch.tensor([c for c in range(self.width) if c not in special])
        self.active = False  # per generate() call: no prefix tokens
        self.tokens = None  # (rows, width): the token id of every column of the current step's table

    def compact(self, lprobs):
        if self.special.device != lprobs.device:
            self.special, self.others = self.special.to(lprobs.device), self.others.to(lprobs.device)
        special_values = lprobs[:, self.special]
        lprobs[:, self.special] = float("-inf")  # our own tensor: the specials have their own columns
        values, tokens = top_by_chunks(lprobs, self.others.numel())
        table = lprobs.new_empty((lprobs.size(0), self.width))
        table[:, self.others] = values
        table[:, self.special] = special_values
        self.tokens = tokens.new_empty((lprobs.size(0), self.width))
        self.tokens[:, self.others] = tokens
        self.tokens[:, self.special] = self.special
        return table


class LeanEnsembleModel(EnsembleModel):
    """fairseq's ensemble interface over one encoder-decoder model, decoding with :class:`LeanDecoder`."""

    def __init__(self, models, beam_size, candidates=None):
        super().__init__(models)
        self.beam_size = beam_size
        self.lean_decoder = LeanDecoder(models[0].decoder)
        self.candidates = candidates

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
        lprobs, attention = self.lean_decoder.step(tokens, encoder_outs[0], state[CACHE_KEY], state, temperature)
        if self.candidates is not None and self.candidates.active:
            lprobs = self.candidates.compact(lprobs)
        return lprobs, attention


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
    """fairseq's BeamSearch step. On a compact table (``candidates.active``) it is the stock step over the table's
    columns, mapped back to token ids. On the full table it does not add the beams' scores to the whole (beams x
    vocabulary) table: each beam's best 2 x beam tokens are the only ones that can be among the sentence's best
    2 x beam, so the scores are added to those only, and each beam's best are found chunk by chunk (top_by_chunks).
    Either way the candidates' values are the same sums as stock (same operands, same order)."""

    def __init__(self, tgt_dict, candidates=None):
        super().__init__(tgt_dict)
        self.candidates = candidates

    def step(self, step, lprobs, scores, prev_output_tokens=None, original_batch_idxs=None, candidate_multiple=2):
        sentences, beam_size, vocab_size = lprobs.size()
        if self.candidates is not None and self.candidates.active:
            best_scores, columns, beams = super().step(step, lprobs, scores, prev_output_tokens, original_batch_idxs,
                                                       candidate_multiple)
            token_ids = self.candidates.tokens.view(sentences, beam_size * vocab_size)
            return best_scores, token_ids.gather(1, beams * vocab_size + columns), beams
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


class LeanSequenceGenerator(SequenceGenerator):
    """fairseq's SequenceGenerator, decoding with the lean decoder when the model allows it (``lean_unsupported``
    says why not, and then it is the stock generator)."""

    def __init__(self, models, tgt_dict, **kwargs):
        super().__init__(models, tgt_dict, **kwargs)
        self.candidates = None
        models = list(self.model.models)
        self.lean_unsupported = why_not_lean(models)
        if self.lean_unsupported is not None:
            return
        plain_beam_search = (type(self.search) is BeamSearch and self.lm_model is None and self.eos == tgt_dict.eos()
                             and self.repeat_ngram_blocker is None and self.token_indices_to_suppress is None)
        if plain_beam_search:
            table = CandidateTable(tgt_dict, self.beam_size)
            if 2 * table.width <= self.vocab_size:
                self.candidates = table
        self.model = LeanEnsembleModel(models, self.beam_size, self.candidates).eval()
        if type(self.search) is BeamSearch:
            self.search = LeanBeamSearch(tgt_dict, self.candidates)

    def _generate(self, sample, prefix_tokens=None, constraints=None, bos_token=None):
        if self.candidates is None or prefix_tokens is not None:  # the prefix is read by token id: full table
            return super()._generate(sample, prefix_tokens, constraints, bos_token)
        vocab_size = self.vocab_size
        self.candidates.active, self.vocab_size = True, self.candidates.width  # the loop views the table by it
        try:
            return super()._generate(sample, prefix_tokens, constraints, bos_token)
        finally:
            self.candidates.active, self.vocab_size = False, vocab_size


def why_not_lean(models):
    """Why the lean decoder cannot decode for ``models``, or None when it can."""
    if len(models) != 1:
        return f"an ensemble of {len(models)} models"
    model = models[0]
    if not hasattr(model, "encoder") or not hasattr(model, "decoder"):
        return f"{type(model).__name__}, not an encoder-decoder"
    return unsupported(model.decoder)
