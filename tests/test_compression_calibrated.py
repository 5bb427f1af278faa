"""The calibrated compressors (GPTQ, SparseGPT, Wanda) against oracles, on small layers with fixed seeds."""
import pytest
import torch
from torch import nn

from fairseq_ext.compression import CompressionSpec, compress
from fairseq_ext.compression.calibrated import compress_calibrated
from fairseq_ext.compression.gptq import Grid, Pruning, inverse_hessian_factor, solve_
from fairseq_ext.compression.pruning import magnitude_masks, n_of_m_keep, pruned_count
from fairseq_ext.compression.quantization import fake_quantize_
from fairseq_ext.compression.wanda import wanda_keep


def correlated_inputs(samples, columns, seed):
    """Inputs with unequal, correlated features, as a layer's are: where second-order methods differ from RTN."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(columns, columns, generator=g) * 0.4 + torch.eye(columns) * torch.rand(columns, generator=g) * 3
    return torch.randn(samples, columns, generator=g) @ mixing


def output_error(x, weight, approximation):
    return ((x @ weight.T - x @ approximation.T) ** 2).sum().item()


def bits_of(t):
    return t.contiguous().view(torch.int32)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bits,scheme,granularity,group_size", [
    (2, "symmetric", "channel", 0), (3, "asymmetric", "channel", 0), (4, "symmetric", "tensor", 0),
    (4, "asymmetric", "channel", 0), (2, "asymmetric", "group", 16), (4, "symmetric", "group", 8)])
def test_gptq_beats_round_to_nearest_and_lands_on_its_grid(seed, bits, scheme, granularity, group_size):
    x = correlated_inputs(256, 48, seed)
    weight = torch.randn(16, 48, generator=torch.Generator().manual_seed(seed + 10))
    gptq = weight.clone()
    act_order = seed == 1  # the inputs with the largest second moment first (ignored for groups)
    assert solve_(gptq, x.T @ x, grid=Grid(bits, scheme, granularity, group_size), block_columns=20,
                  act_order=act_order) is None
    rtn = weight.clone()
    fake_quantize_(rtn, bits, scheme, granularity, group_size)
    assert output_error(x, weight, gptq) < output_error(x, weight, rtn)
    again = gptq.clone()
    fake_quantize_(again, bits, scheme, granularity, group_size)  # round-to-nearest finds the very grid GPTQ used
    assert torch.equal(bits_of(again), bits_of(gptq))
    levels = 2 ** bits - (1 if scheme == "symmetric" else 0)
    groups = gptq.reshape(-1, group_size or 48)
    assert all(len(group.unique()) <= levels for group in groups)


def test_gptq_on_one_column_is_round_to_nearest():
    """With a single input the nearest grid point is the optimum, and GPTQ has nothing to compensate."""
    weight = torch.tensor([[0.31], [-1.7], [0.05], [2.2]])
    hessian = torch.tensor([[3.0]])
    gptq = weight.clone()
    solve_(gptq, hessian, grid=Grid(3, "symmetric", "tensor"))
    rtn = weight.clone()
    fake_quantize_(rtn, 3, "symmetric", "tensor")
    assert torch.equal(gptq, rtn)


def test_pruning_the_first_column_gives_the_least_squares_optimum():
    """Pruning entries of the first column, SparseGPT's update of the later columns is the exact least-squares
    refit of the row on the kept inputs (Optimal Brain Surgeon): the brute-force optimum, computed here directly."""
    x = correlated_inputs(200, 6, seed=3).double()
    weight = torch.randn(3, 6, generator=torch.Generator().manual_seed(4)).double()
    keep = torch.ones(3, 6, dtype=torch.bool)
    keep[:, 0] = False
    solved = weight.clone()
    solve_(solved, x.T @ x, pruning=Pruning(keep=keep), damping=1e-9)
    kept_inputs = x[:, 1:]
    optimum = torch.linalg.lstsq(kept_inputs, x @ weight.T).solution.T
    assert torch.allclose(solved[:, 1:], optimum, atol=1e-4, rtol=1e-4)
    assert torch.equal(solved[:, 0], torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.8])
def test_sparsegpt_prunes_exactly_and_beats_magnitude(sparsity):
    x = correlated_inputs(512, 64, seed=5)
    weight = torch.randn(24, 64, generator=torch.Generator().manual_seed(6))
    pruned = weight.clone()
    keep = solve_(pruned, x.T @ x, pruning=Pruning(sparsity=sparsity), block_columns=16, act_order=sparsity == 0.7)
    count = pruned_count(sparsity, weight.numel())
    assert int((~keep).sum()) == count and int((pruned == 0).sum()) == count
    assert torch.equal(bits_of(pruned[~keep]), torch.zeros(count, dtype=torch.int32))  # +0.0, never -0.0
    magnitude = weight * magnitude_masks({"w": weight}, sparsity, "layer")["w"]
    assert output_error(x, weight, pruned) < output_error(x, weight, magnitude)


def test_two_of_four_keeps_two_of_every_four_inputs_of_each_row():
    x = correlated_inputs(256, 32, seed=7)
    weight = torch.randn(8, 32, generator=torch.Generator().manual_seed(8))
    pruned = weight.clone()
    keep = solve_(pruned, x.T @ x, pruning=Pruning(n_of_m=(2, 4)))
    assert torch.equal(keep.reshape(8, 8, 4).sum(dim=2), torch.full((8, 8), 2))
    magnitude = weight * n_of_m_keep(weight.abs(), 2, 4)
    assert output_error(x, weight, pruned) < output_error(x, weight, magnitude)


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_joint_pruning_and_quantization_is_stored_exactly(scheme):
    x = correlated_inputs(256, 40, seed=9)
    weight = torch.randn(12, 40, generator=torch.Generator().manual_seed(10))
    joint = weight.clone()
    keep = solve_(joint, x.T @ x, pruning=Pruning(sparsity=0.5), grid=Grid(4, scheme, "channel"), act_order=True)
    assert int((~keep).sum()) == pruned_count(0.5, weight.numel())
    assert not joint[~keep].any()
    again = joint.clone()
    fake_quantize_(again, 4, scheme, "channel")
    assert torch.equal(bits_of(again), bits_of(joint))
    rtn = weight * magnitude_masks({"w": weight}, 0.5, "layer")["w"]
    fake_quantize_(rtn, 4, scheme, "channel")
    assert output_error(x, weight, joint) < output_error(x, weight, rtn)


def test_wanda_mask_on_hand_worked_numbers():
    """Scores |W| * ||X_j||: ||X|| = sqrt(diag H) = (4, 1, 1, 0.5). Row 0: 4, 2, 3, 2 -> the two 2s go (ties by
    position); row 1: 16, 3, 2, 0.5; row 2: 2, 0.5, 0.5, 0.25 -> 0.25 and the first 0.5."""
    weight = torch.tensor([[1.0, -2, 3, -4], [4, 3, 2, 1], [0.5, 0.5, 0.5, 0.5]])
    hessian_diagonal = torch.tensor([16.0, 1, 1, 0.25])
    expected = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    assert torch.equal(wanda_keep(weight, hessian_diagonal, 0.5), expected)
    assert torch.equal(wanda_keep(weight, hessian_diagonal, n_of_m=(2, 4)), expected)
    # 7 of 12 at 0.6: rows get 2, 3, 2 by cumulative rounding (2.4 -> 2, 4.8 -> 5, 7.2 -> 7)
    assert (~wanda_keep(weight, hessian_diagonal, 0.6)).sum(dim=1).tolist() == [2, 3, 2]


def test_singular_second_moments_are_damped_never_nan():
    weight = torch.randn(4, 8, generator=torch.Generator().manual_seed(11))
    for hessian in (torch.zeros(8, 8), torch.ones(8, 8)):  # no signal at all; rank one
        assert torch.isfinite(inverse_hessian_factor(hessian)).all()
        solved = weight.clone()
        solve_(solved, hessian, pruning=Pruning(sparsity=0.5), grid=Grid(3, "symmetric", "channel"))
        assert torch.isfinite(solved).all()


class TinyTranslator(nn.Module):
    """Embedding, a ModuleList of residual blocks, and an output projection tied to the embedding."""

    def __init__(self, vocabulary=50, width=16, layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocabulary, width)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"fc1": nn.Linear(width, 2 * width), "fc2": nn.Linear(2 * width, width)}) for _ in range(layers))
        self.output_projection = nn.Linear(width, vocabulary, bias=False)
        self.output_projection.weight = self.embed.weight

    def forward(self, tokens):
        x = self.embed(tokens)
        for layer in self.layers:
            x = x + layer["fc2"](torch.relu(layer["fc1"](x)))
        return self.output_projection(x)


def tiny_model_and_batches(seed=0):
    torch.manual_seed(seed)
    model = TinyTranslator()
    g = torch.Generator().manual_seed(seed + 1)
    batches = [torch.randint(0, 50, (4, 7), generator=g) for _ in range(3)]
    return model, batches


@pytest.mark.parametrize("spec", [
    CompressionSpec(sparsity=0.5, prune_method="sparsegpt"),
    CompressionSpec(sparsity=0.5, prune_method="wanda", bits=4, quant_method="gptq"),
    CompressionSpec(bits=3, quant_method="gptq"),
    CompressionSpec(sparsity=0.5, prune_pattern="2:4", prune_method="sparsegpt", bits=4, quant_method="gptq"),
])
def test_whole_model_calibration_is_exact_deterministic_and_better_than_uncalibrated(spec):
    model, batches = tiny_model_and_batches()
    reference = TinyTranslator()
    reference.load_state_dict(model.state_dict())
    report, masks, summary = compress_calibrated(model, spec, [lambda b=b: model(b) for b in batches])
    # two layers, and the output projection where GPTQ quantizes the embedding tied to it
    assert summary.stages == (3 if spec.quant_method == "gptq" else 2) and summary.uncalibrated == []
    if spec.prunes:
        prunable = [n for n in masks]
        assert sorted(prunable) == [f"layers.{i}.{fc}.weight" for i in range(2) for fc in ("fc1", "fc2")]
        for name, mask in masks.items():
            assert int((~mask).sum()) == pruned_count(0.5, mask.numel())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    again, _ = compress(model, spec, masks=masks or None)  # stored exactly: the contract changes nothing
    assert all(torch.equal(bits_of(before[k]), bits_of(v)) for k, v in model.state_dict().items() if v.is_floating_point())
    assert again.total_bytes == report.total_bytes
    twin, twin_batches = tiny_model_and_batches()
    compress_calibrated(twin, spec, [lambda b=b: twin(b) for b in twin_batches])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    plain = TinyTranslator()
    plain.load_state_dict(reference.state_dict())
    uncalibrated = CompressionSpec(sparsity=spec.sparsity, prune_pattern=spec.prune_pattern, scope="layer", bits=spec.bits)
    assert compress_calibrated(plain, uncalibrated, [])[2].stages == 0  # magnitude, round-to-nearest: no data
    with torch.no_grad():
        target = torch.cat([reference(b) for b in batches])
        calibrated_error = ((torch.cat([model(b) for b in batches]) - target) ** 2).sum()
        plain_error = ((torch.cat([plain(b) for b in batches]) - target) ** 2).sum()
    assert calibrated_error < plain_error


def test_stages_follow_the_forward_order_and_later_layers_see_compressed_inputs():
    model, batches = tiny_model_and_batches()
    seen = []
    original = model.layers[1]["fc1"].forward
    model.layers[1]["fc1"].forward = lambda x: (seen.append(model.layers[0]["fc2"].weight.clone()), original(x))[1]
    first_fc2 = model.layers[0]["fc2"].weight.clone()
    compress_calibrated(model, CompressionSpec(bits=2, quant_method="gptq"), [lambda b=b: model(b) for b in batches])
    # layer 1's calibration passes ran after layer 0 was quantized: its inputs came from the compressed layer
    assert any(torch.equal(w, model.layers[0]["fc2"].weight) and not torch.equal(w, first_fc2) for w in seen)
