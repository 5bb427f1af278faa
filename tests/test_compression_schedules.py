"""Pruning schedules: known values, and a resumed run prunes exactly like an uninterrupted one."""

import pytest
import torch
from torch import nn

from fairseq_ext.compression import apply_masks, magnitude_masks, prunable_weights, sparsity_at, validate_schedule


def test_oneshot():
    values = [sparsity_at(t, schedule="oneshot", target=0.8, start=10) for t in (0, 9, 10, 11, 10_000)]
    assert values == [0.0, 0.0, 0.8, 0.8, 0.8]


def test_iterative_prunes_a_fraction_of_the_remaining_weights_capped_at_target():
    at = [sparsity_at(t, schedule="iterative", target=0.7, start=100, every=50, fraction=0.5) for t in
          (99, 100, 149, 150, 200, 250, 10_000)]
    assert at == [0.0, 0.5, 0.5, 0.7, 0.7, 0.7, 0.7]  # 0.5, then 0.75 capped at 0.7
    assert sparsity_at(160, schedule="iterative", target=0.9, start=100, every=50, fraction=0.5) == 0.75


def test_gradual_cubic_at_start_midpoint_and_end():
    options = dict(schedule="gradual", target=0.9, initial=0.1, start=100, end=300)
    assert sparsity_at(99, **options) == 0.0
    assert sparsity_at(100, **options) == 0.1
    # Midpoint: (1 - 1/2)**3 = 1/8 of the way is left.
    assert sparsity_at(200, **options) == pytest.approx(0.9 + (0.1 - 0.9) / 8)
    assert sparsity_at(300, **options) == 0.9
    assert sparsity_at(5000, **options) == 0.9
    values = [sparsity_at(t, **options) for t in range(100, 301)]
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_gradual_holds_its_value_between_pruning_steps():
    options = dict(schedule="gradual", target=0.8, start=0, end=100, every=10)
    assert sparsity_at(15, **options) == sparsity_at(10, **options) < sparsity_at(20, **options)
    assert sparsity_at(10, **options) == pytest.approx(0.8 * (1 - 0.9**3))


def test_bad_schedules_list_every_problem():
    with pytest.raises(ValueError) as error:
        validate_schedule(schedule="gradual", target=1.5, start=10, end=5, every=0, initial=0.2)
    message = str(error.value)
    for fragment in ("target=1.5", "every=0: must be >= 1", "end=5, start=10"):
        assert fragment in message
    with pytest.raises(ValueError, match="schedule='cosine': allowed values are 'oneshot', 'iterative', 'gradual'"):
        sparsity_at(0, schedule="cosine", target=0.5)
    with pytest.raises(ValueError, match="fraction=0.0"):
        sparsity_at(0, schedule="iterative", target=0.5)
    with pytest.raises(ValueError, match="initial=0.6 > target=0.5"):
        sparsity_at(0, schedule="gradual", target=0.5, initial=0.6, end=10)


def train(model, updates, masks, schedule):
    """A toy finetuning loop: deterministic updates, re-pruning on every update by the schedule."""
    weights = prunable_weights(model)
    for update in updates:
        generator = torch.Generator().manual_seed(update)
        with torch.no_grad():
            for weight in weights.values():
                weight.add_(0.05 * torch.randn(weight.shape, generator=generator))
        sparsity = sparsity_at(update, **schedule)
        if sparsity > 0:
            masks = magnitude_masks(weights, sparsity, "global")
        if masks:
            apply_masks(weights, masks)
    return masks


def test_a_resumed_run_prunes_like_an_uninterrupted_one():
    schedule = dict(schedule="gradual", target=0.75, start=2, end=12, every=3)
    torch.manual_seed(0)
    uninterrupted = nn.Sequential(nn.Linear(6, 9), nn.Linear(9, 4))
    resumed = nn.Sequential(nn.Linear(6, 9), nn.Linear(9, 4))
    resumed.load_state_dict(uninterrupted.state_dict())

    final_masks = train(uninterrupted, range(16), {}, schedule)
    masks = train(resumed, range(7), {}, schedule)
    checkpoint = {k: v.clone() for k, v in resumed.state_dict().items()}
    restarted = nn.Sequential(nn.Linear(6, 9), nn.Linear(9, 4))
    restarted.load_state_dict(checkpoint)
    # The masks are not in the checkpoint: the schedule and the weights recreate them.
    masks = magnitude_masks(prunable_weights(restarted), sparsity_at(6, **schedule), "global")
    resumed_masks = train(restarted, range(7, 16), masks, schedule)

    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(value, restarted.state_dict()[key])
    for name in final_masks:
        assert torch.equal(final_masks[name], resumed_masks[name])
    assert sum(int((~m).sum()) for m in final_masks.values()) == 67  # 0.75 x 90 = 67.5: halves round down
