"""The benchmark scripts: what they compare is what they claim to compare, and they run end to end (--quick).
No timing is asserted anywhere: the machine running the tests is shared."""
import json
import sys

import pytest
import torch

from clitools import REPO, run
from fairseq_ext.models.grid import build_for_vocab

sys.path.insert(0, str(REPO / "scripts"))
import bench_generate  # noqa: E402
import bench_train  # noqa: E402


def shapes(model):
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@pytest.mark.parametrize("arch", ["transformer_wmt_en_fr_d2_h256", "transformer_wmt_en_fr_d6_h1024"])
def test_stock_twin_of_a_grid_arch_is_the_same_model(arch):
    flags = [str(a) for a in bench_train.stock_arch_args(arch)]
    assert flags[:2] == ["--arch", "transformer_vaswani_wmt_en_fr_big"]
    overrides = {"share_all_embeddings": True}
    for flag, value in zip(flags[3::2], flags[4::2]):
        overrides[flag[2:].replace("-", "_")] = int(value)
    stock = build_for_vocab("transformer_vaswani_wmt_en_fr_big", 8000, device="meta", **overrides)
    grid = build_for_vocab(arch, 8000, device="meta")
    assert shapes(stock) == shapes(grid)
    assert vars(stock.args) | {"arch": None, "_name": None} == vars(grid.args) | {"arch": None, "_name": None}


def test_fused_adamw_for_fairseq_matches_fairseq_adam():
    """The GPU mode's fused AdamW is the update of fairseq's own Adam (decoupled weight decay)."""
    from fairseq.optim.adam import Adam

    config = dict(lr=1e-2, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01)
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(7)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(3)]
    results = []
    for cls in (Adam, bench_train.torch_fused_adamw()):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = cls(params, **config) if cls is Adam else cls(params, use_fp16_stats=False, **config)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            optimizer.step()
        results.append([p.detach() for p in params])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert bench_train.torch_fused_adamw().supports_flat_params


def test_cpu_commands_compare_like_with_like(tmp_path):
    args = bench_train.parse_args(["--archs", "transformer_wmt_en_fr_d2_h512"])
    grid = [str(c) for c in bench_train.train_command("grid", "transformer_wmt_en_fr_d2_h512", tmp_path, args)]
    stock = [str(c) for c in bench_train.train_command("stock", "transformer_wmt_en_fr_d2_h512", tmp_path, args)]
    assert "--user-dir" in grid and "--user-dir" not in stock  # stock is fairseq alone
    common = bench_train.common_train_args(args)
    assert grid[-len(common) - 3:] == stock[-len(common) - 3:]  # same settings, seed and batches
    with pytest.raises(SystemExit):
        bench_train.parse_args(["--archs", "transformer"])


def test_bf16_comparison_differs_from_fp32_by_the_flag_alone(tmp_path):
    args = bench_train.parse_args(["--compare", "bf16", "--archs", "transformer_wmt_en_fr_d2_h256"])
    bf16 = [str(c) for c in bench_train.train_command("bf16", "transformer_wmt_en_fr_d2_h256", tmp_path, args)]
    fp32 = [str(c) for c in bench_train.train_command("fp32", "transformer_wmt_en_fr_d2_h256", tmp_path, args)]
    assert [a for a in bf16 if a != "--autocast-bf16"] == fp32 and "--autocast-bf16" in bf16
    assert fp32[fp32.index("--task") + 1] == "compressed_translation"  # the flag is the plugin task's


def test_generate_variants_and_fixed_length():
    args = bench_generate.parse_args(["--variants", "fp32,int8,pruned_int8"])
    int8 = [str(c) for c in bench_generate.generate_command("int8", "DATA", "CKPT", args)]
    fp32 = [str(c) for c in bench_generate.generate_command("fp32", "DATA", "CKPT", args)]
    assert "--int8-kernels" in int8 and "compressed_translation" in int8 and "translation" in fp32
    for flags in (int8, fp32):
        assert flags[flags.index("--min-len") + 1] == flags[flags.index("--max-len-b") + 1] == "30"
        assert flags[flags.index("--beam") + 1] == "4" and flags[flags.index("--batch-size") + 1] == "32"
    with pytest.raises(SystemExit):
        bench_generate.parse_args(["--variants", "fp32,int4"])


@pytest.mark.e2e
def test_bench_train_quick(multi30k_2k, tmp_path):
    out = run(["scripts/bench_train.py", "--quick", "--max-update", "4", "--data-bin", multi30k_2k / "bin",
               "--work", tmp_path,
               "--json", tmp_path / "train.json"]).output
    assert "| transformer_wmt_en_fr_d2_h256 |" in out and "grid/stock" in out
    (row,) = json.loads((tmp_path / "train.json").read_text())["results"]
    assert row["arch"] == "transformer_wmt_en_fr_d2_h256" and row["params"] > 0
    (measured,) = row["rounds"]
    assert measured["grid"]["params"] == measured["stock"]["params"] == row["params"]
    assert row["median_ratio"] == round(measured["grid"]["wps"] / measured["stock"]["wps"], 3) > 0


@pytest.mark.e2e
def test_bench_generate_quick(multi30k_2k, tmp_path):
    out = run(["scripts/bench_generate.py", "--quick", "--data-bin", multi30k_2k / "bin", "--work", tmp_path,
               "--variants", "fp32,pruned_int8", "--json", tmp_path / "generate.json"]).output
    for variant in ("fp32", "pruned_int8"):
        assert f"| transformer_wmt_en_fr_d2_h256 | {variant} |" in out
    assert "ratio to fp32" in out and (tmp_path / "generate.json").is_file()
