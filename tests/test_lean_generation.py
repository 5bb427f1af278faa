"""The lean decoder's search pieces against fairseq's and torch's own, on tiny tensors with fixed seeds."""
import pytest
import torch
from fairseq.search import BeamSearch


def test_lean_beam_step_selects_the_stock_candidates():
    from fairseq.data import Dictionary

    from fairseq_ext.generation.lean_generator import LeanBeamSearch

    dictionary = Dictionary()
    for index in range(5000):  # wide enough for the chunked search (> 8 x 2 x beam x 64)
        dictionary.add_symbol(f"w{index}")
    generator = torch.Generator().manual_seed(0)
    sentences, beam, vocabulary = 3, 4, len(dictionary)
    lprobs = torch.randn(sentences, beam, vocabulary, generator=generator).log_softmax(-1)
    lprobs[:, :, dictionary.pad()] = float("-inf")
    scores = torch.randn(sentences, beam, 5, generator=generator).cumsum(-1)
    for step in (0, 3):
        stock = BeamSearch(dictionary).step(step, lprobs.clone(), scores)
        lean = LeanBeamSearch(dictionary).step(step, lprobs.clone(), scores)
        for stock_part, lean_part in zip(stock, lean):
            assert torch.equal(stock_part, lean_part)
    assert lean[0].shape == (sentences, 2 * beam)


@pytest.mark.parametrize("width", [40000, 40003, 7700, 300])
def test_top_by_chunks_is_torch_topk(width):
    from fairseq_ext.generation.lean_generator import top_by_chunks

    generator = torch.Generator().manual_seed(width)
    x = torch.randn(64, width, generator=generator).log_softmax(-1)
    x[:, 1] = float("-inf")  # a masked column (pad)
    x[3, : width // 2] = float("-inf")  # a row whose best all lie in its second half
    for k in (1, 8, 10):
        expected, found = torch.topk(x, k, dim=1), top_by_chunks(x, k)
        assert torch.equal(found[0], expected.values) and torch.equal(found[1], expected.indices)
