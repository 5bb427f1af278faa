"""Magnitude pruning: which tensors, exact sparsity, deterministic ties, both selection paths."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fairseq_ext.compression import CompressionSpec, apply_masks, compress, magnitude_masks, prunable_weights
from fairseq_ext.compression import pruning
from fairseq_ext.compression.pruning import pruned_count


class TiedModel(nn.Module):
    """fairseq's shape of ties: the output projection is an nn.Linear holding the embedding matrix."""

    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(11, 6)
        self.fc1 = nn.Linear(6, 8)
        self.layer_norm = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 6, bias=False)
        self.output_projection = nn.Linear(6, 11, bias=False)
        self.output_projection.weight = self.embed_tokens.weight


def reference_keep(arrays, n_prune):
    """Brute force: a stable sort of all magnitudes; the first n_prune (ties: earlier first) go."""
    flat = np.abs(np.concatenate(arrays).astype(np.float64))
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:n_prune]] = False
    return np.split(keep, np.cumsum([a.size for a in arrays])[:-1])


def test_prunable_weights_are_linear_matrices_and_the_tied_projection_counts_as_embedding():
    model = TiedModel()
    assert list(prunable_weights(model)) == ["fc1.weight", "fc2.weight"]
    with_embeddings = prunable_weights(model, include_embeddings=True)
    assert list(with_embeddings) == ["embed_tokens.weight", "fc1.weight", "fc2.weight"]
    assert with_embeddings["embed_tokens.weight"] is model.output_projection.weight


def test_global_and_layer_scope_on_known_values():
    weights = {"a": torch.tensor([[0.1, -0.5], [0.3, 0.2]]), "b": torch.tensor([[0.4, -0.05, 0.6, 0.7]])}
    global_masks = magnitude_masks(weights, 0.5, "global")
    assert global_masks["a"].tolist() == [[False, True], [False, False]]
    assert global_masks["b"].tolist() == [[True, False, True, True]]
    layer_masks = magnitude_masks(weights, 0.5, "layer")
    assert layer_masks["a"].tolist() == [[False, True], [True, False]]
    assert layer_masks["b"].tolist() == [[False, False, True, True]]


def test_ties_are_broken_by_flat_position_across_tensors():
    weights = {"a": torch.tensor([[1.0, -1.0, 2.0]]), "b": torch.tensor([[1.0, 1.0, -2.0]])}
    masks = magnitude_masks(weights, 0.5, "global")  # 3 of the four 1.0 magnitudes go, earliest first
    assert masks["a"].tolist() == [[False, False, True]]
    assert masks["b"].tolist() == [[False, True, True]]


arrays_strategy = st.lists(
    st.tuples(st.integers(1, 40), st.booleans()), min_size=1, max_size=4
).flatmap(
    lambda specs: st.tuples(st.just(specs), st.integers(0, 2**31 - 1), st.floats(0, 0.999))
)


@settings(max_examples=60, deadline=None)
@given(arrays_strategy)
def test_keep_masks_match_the_brute_force_reference(case):
    sizes_and_ties, seed, sparsity = case
    rng = np.random.default_rng(seed)
    # Half the arrays take few distinct values, so ties are everywhere.
    arrays = [
        (np.round(rng.standard_normal(n) * 2) / 2 if ties else rng.standard_normal(n)).astype(np.float32)
        for n, ties in sizes_and_ties
    ]
    n_prune = pruned_count(sparsity, sum(a.size for a in arrays))
    masks = pruning.keep_masks(arrays, n_prune)
    for mask, expected in zip(masks, reference_keep(arrays, n_prune)):
        np.testing.assert_array_equal(mask, expected)
    assert sum(np.count_nonzero(~m) for m in masks) == n_prune


@pytest.mark.parametrize("ties", [False, True])
def test_sampled_bracket_and_partition_fallback_both_match_the_reference(monkeypatch, ties):
    """With a tiny sample the bracket path runs on small inputs; heavy ties overflow the band and
    force the partition fallback. Both must give the reference answer."""
    monkeypatch.setattr(pruning, "SAMPLE_SIZE", 1024)
    monkeypatch.setattr(pruning, "MIN_BAND_CAPACITY", 1000)
    monkeypatch.setattr(pruning, "CHUNK", 100)  # several chunks per array
    fallbacks = []
    original = pruning._select_by_partition
    monkeypatch.setattr(
        pruning, "_select_by_partition", lambda *a: fallbacks.append(1) or original(*a)
    )
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(n).astype(np.float32) for n in (700, 333, 1000)]
    if ties:
        arrays = [np.where(np.abs(a) < 1.0, 0.0, a).astype(np.float32) for a in arrays]
    for sparsity in (0.1, 0.5, 0.9):
        n_prune = pruned_count(sparsity, 2033)
        for mask, expected in zip(pruning.keep_masks(arrays, n_prune), reference_keep(arrays, n_prune)):
            np.testing.assert_array_equal(mask, expected)
    assert bool(fallbacks) == ties


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_exact_sparsity_and_pruning_twice_changes_nothing(scope):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 13), nn.ReLU(), nn.Linear(13, 5))
    spec = CompressionSpec(sparsity=0.7, scope=scope)
    report, masks = compress(model, spec)
    weights = prunable_weights(model)
    if scope == "global":
        assert sum(int((~m).sum()) for m in masks.values()) == 109  # 0.7 x 156 = 109.2
    else:
        assert [int((~m).sum()) for m in masks.values()] == [64, 45]  # 0.7 x 91 = 63.7; 0.7 x 65 = 45.5, halves down
    assert report.sparsity == sum(int((~m).sum()) for m in masks.values()) / 156
    before = {name: w.detach().clone() for name, w in weights.items()}
    _, masks_again = compress(model, spec)
    for name in weights:
        assert torch.equal(masks_again[name], masks[name])
        assert torch.equal(weights[name], before[name])
        assert torch.equal(weights[name] == 0, ~masks[name])


def test_apply_masks_writes_positive_zeros_and_checks_names():
    weight = torch.tensor([[-1.0, -2.0], [3.0, -4.0]])
    apply_masks({"w": weight}, {"w": torch.tensor([[False, True], [True, False]])})
    assert weight.tolist() == [[0.0, -2.0], [3.0, 0.0]]
    assert not torch.signbit(weight[0, 0]) and not torch.signbit(weight[1, 1])
    with pytest.raises(ValueError, match="mask 'v' matches no weight"):
        apply_masks({"w": weight}, {"v": torch.ones(2, 2, dtype=torch.bool)})


def test_bad_pruning_requests_list_every_problem():
    with pytest.raises(ValueError) as error:
        magnitude_masks({}, 1.2, "row")
    message = str(error.value)
    assert "sparsity=1.2" in message and "scope='row': allowed values are 'global', 'layer'" in message
    assert "nothing prunable" in message
    with pytest.raises(ValueError, match="nothing prunable"):
        compress(nn.Sequential(nn.LayerNorm(4)), CompressionSpec(sparsity=0.5))
    with pytest.raises(ValueError, match="nothing prunable"):  # the only Linear is a tied embedding
        model = TiedModel()
        del model.fc1, model.fc2
        compress(model, CompressionSpec(sparsity=0.5))
