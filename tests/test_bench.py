"""The benchmark scripts (scripts/bench_*.py, their runs and readings in fairseq_ext/benchmarks.py): what they compare is
what they claim to compare, they read fairseq's figures right, and they run end to end (--quick).
No timing is asserted anywhere: the machine running the tests is shared."""
import json
import statistics
import subprocess
import sys

import pytest
import torch

from clitools import REPO, clean_env, run
from fairseq_ext.benchmarks import (
    FAIRSEQ_TRAIN,
    FAIRSEQ_VARIANTS,
    PAIRS,
    cpu_train_command,
    generate_command,
    grid_shape,
    parse_train_output,
    parse_translated,
    stock_arch_args,
    summarize,
    train_model_args,
    train_settings,
    train_throughput,
)
from fairseq_ext.models.grid import build_for_vocab


def test_the_benchmark_helpers_import_without_fairseq_or_torch():
    """The scripts' own process runs no model (fairseq runs in the subprocesses): fairseq_ext.benchmarks loads
    neither, so bench_train.py and bench_generate.py start in a fraction of a second. A fresh interpreter: this one
    has imported both."""
    code = ("import json, sys\nimport fairseq_ext.benchmarks\n"
            "print(json.dumps({name: name in sys.modules for name in ('fairseq', 'torch')}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {"fairseq": False, "torch": False}


def shapes(model):
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@pytest.mark.parametrize("arch", ["transformer_wmt_en_fr_d2_h256", "transformer_wmt_en_fr_d6_h1024"])
def test_stock_twin_of_a_grid_arch_is_the_same_model(arch):
    flags = [str(a) for a in stock_arch_args(arch)]
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

    from fairseq_ext.gpu_training import torch_fused_adamw

    config = dict(lr=1e-2, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01)
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(7)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(3)]
    results = []
    for cls in (Adam, torch_fused_adamw()):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = cls(params, **config) if cls is Adam else cls(params, use_fp16_stats=False, **config)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            optimizer.step()
        results.append([p.detach() for p in params])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch_fused_adamw().supports_flat_params


def without(command, part):
    """``command`` with the one occurrence of the contiguous ``part`` taken out."""
    starts = [i for i in range(len(command) - len(part) + 1) if command[i:i + len(part)] == part]
    assert len(starts) == 1, (part, command)
    return command[:starts[0]] + command[starts[0] + len(part):]


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_the_two_runs_compared_differ_by_their_model_arguments_alone(pair, tmp_path):
    arch = "transformer_wmt_en_fr_d2_h512"
    commands = {}
    for kind in PAIRS[pair]:
        task, model = train_model_args(kind, arch)
        command = cpu_train_command(kind, arch, tmp_path, 2048, 25, 5)
        assert command == [*FAIRSEQ_TRAIN, tmp_path, *model, *train_settings(2048, 25, 5, task), "--cpu",
                           "--num-workers", "0"]
        assert command[command.index("--seed") + 1] == "1" and command[command.index("--max-tokens") + 1] == 2048
        commands[kind] = [str(c) for c in without(command, model)]
    first, second = commands.values()
    assert first == second  # same data, task, settings, seed and batches
    grid, stock = (train_model_args(kind, arch)[1] for kind in ("grid", "stock"))
    assert "--user-dir" in grid and "--user-dir" not in stock  # stock is fairseq alone
    assert train_model_args("bf16", arch)[1] == [*train_model_args("fp32", arch)[1], "--autocast-bf16"]
    assert train_model_args("fp32", arch)[0] == "compressed_translation"  # the flag is the plugin task's


def test_only_grid_archs_are_benchmarked():
    assert grid_shape("transformer_wmt_en_fr_d12_h2048") == (12, 2048)
    for name in ("transformer", "roberta_d3_h256", "transformer_wmt_en_fr_d2_h256_x"):
        with pytest.raises(ValueError, match="not a transformer_wmt_en_fr_d\\*_h\\* grid arch"):
            train_model_args("grid", name)
    proc = run(["scripts/bench_train.py", "--archs", "transformer_wmt_en_fr_d2_h256,transformer"], check=False)
    assert proc.returncode == 2
    assert "error: --archs: transformer is not a transformer_wmt_en_fr_d*_h* grid arch" in proc.stderr


def train_log(records, params="1,234"):
    """fairseq-train console output: start-up lines, train_inner records (--log-format json), the epoch's record."""
    lines = ["2026-12-04 10:00:00 | INFO | fairseq_cli.train | TransformerModel(...)",
             f"2026-12-04 10:00:00 | INFO | fairseq_cli.train | num. shared model params: {params} (num. trained: "
             f"{params})"]
    lines += [f"2026-12-04 10:00:01 | INFO | train_inner | {json.dumps(r)}" for r in records]
    lines.append('2026-12-04 10:00:09 | INFO | train | {"epoch": 1, "train_wps": "1.0"}')
    return "\n".join(lines) + "\n"


def test_words_per_second_are_the_median_after_the_warm_up_interval():
    records = [{"epoch": 1, "num_updates": str(2 * i), "wps": wps, "wpb": wpb, "bsz": bsz}
               for i, (wps, wpb, bsz) in enumerate([("50.0", "900", "30"), ("300.5", "1000", "40"),
                                                    ("100", "1200", "40"), ("200", "800", "20")], start=1)]
    params, parsed = parse_train_output(train_log(records))
    assert params == 1234 and [r["num_updates"] for r in parsed] == ["2", "4", "6", "8"]  # not the train record
    measured = train_throughput(parsed)
    # The first interval (50 words/s) holds the warm-up: dropped.
    assert measured == {"wps": 200.0, "wpb": 1000.0, "mean_target_len": (25 + 30 + 40) / 3, "records": 4}
    assert train_throughput(parsed[:2])["wps"] == 300.5
    with pytest.raises(ValueError, match="need >= 2 train_inner records, got 1"):
        train_throughput(parsed[:1])
    assert parse_train_output("no model line")[0] is None


GENERATE = dict(beam=4, batch_size=32, length=30, prune_heads="0.5", prune_ffn="0.25", group_size="64")


def test_generate_variants_decode_a_fixed_length_and_differ_by_their_flags_alone():
    commands = {v: [str(c) for c in generate_command(v, "DATA", "CKPT", **GENERATE)]
                for v in FAIRSEQ_VARIANTS}
    four_bit = ["--quant-bits", "4", "--quant-granularity", "group", "--quant-group-size", "64"]
    flags = {"fp32": ["--task", "translation"],
             "lean": ["--task", "compressed_translation"],
             "int8": ["--task", "compressed_translation", "--int8-kernels"],
             "int8_stock": ["--task", "compressed_translation", "--int8-kernels", "--stock-generator"],
             "pruned": ["--task", "compressed_translation", "--prune-heads", "0.5", "--prune-ffn", "0.25"],
             "pruned_int8": ["--task", "compressed_translation", "--prune-heads", "0.5", "--prune-ffn", "0.25",
                             "--int8-kernels"],
             "sim4": ["--task", "compressed_translation", *four_bit],
             "int4": ["--task", "compressed_translation", *four_bit, "--int4-kernels"],
             "int4_packed": ["--task", "compressed_translation", "--int4-kernels"]}
    shared = {v: without(c, flags[v]) for v, c in commands.items()}
    assert len({tuple(c) for c in shared.values()}) == 1  # everything else the same
    common = shared["fp32"]
    assert common[common.index("--min-len") + 1] == common[common.index("--max-len-b") + 1] == "30"
    assert common[common.index("--max-len-a") + 1] == "0"
    assert common[common.index("--beam") + 1] == "4" and common[common.index("--batch-size") + 1] == "32"
    assert common[common.index("--path") + 1] == "CKPT" and "--cpu" in common
    proc = run(["scripts/bench_generate.py", "--variants", "fp32,int2"], check=False)
    assert proc.returncode == 2 and "error: unknown --variants int2" in proc.stderr


def test_decoding_speed_is_read_from_fairseqs_line_and_the_length_is_checked():
    line = ("2026-12-04 10:00:00 | INFO | fairseq_cli.generate | Translated 1,024 sentences (31,744 tokens) in 12.5s "
            "(81.92 sentences/s, 2539.52 tokens/s)")
    assert parse_translated("start-up\n" + line, 30) == {"sentences": 1024, "tokens": 31744, "seconds": 12.5,
                                                         "tokens_per_s": 2539.52}
    fast = line.replace("in 12.5s", "in 0.0s")  # fairseq rounds its timer to 0.1 s; its tokens/s is unrounded
    assert parse_translated(fast, 30)["tokens_per_s"] == 2539.52
    with pytest.raises(ValueError, match="31744 tokens for 1024 sentences, expected 30720"):
        parse_translated(line, 29)
    with pytest.raises(ValueError, match="no 'Translated"):
        parse_translated("Generate test with beam=4: BLEU = 1.0", 30)


def test_summary_ratios_are_per_round_against_the_same_rounds_fp32():
    speeds = [{"fp32": 100.0, "int8": 250.0, "ct2_int8": 500.0}, {"fp32": 50.0, "int8": 150.0, "ct2_int8": 200.0},
              {"fp32": 80.0, "int8": 160.0, "ct2_int8": 400.0}]
    peaks = [900.0, 960.0, 930.0]
    result = {"arch": "A", "variants": ["fp32", "int8", "ct2_int8"],
              "rounds": [{v: {"tokens_per_s": s, "peak_rss_mb": peak, "runtime_mb": 268.1, "accounted_mb": 869.3}
                          for v, s in r.items()} for r, peak in zip(speeds, peaks)]}
    rows = {row["variant"]: row for row in summarize(result)}
    assert rows["int8"] == {"arch": "A", "variant": "int8", "tokens_per_s": [250.0, 150.0, 160.0],
                            "ratio_to_fp32": [2.5, 3.0, 2.0], "median_ratio": 2.5,
                            "median_ratio_to_ct2_int8": 0.5,  # 0.5, 0.75, 0.4
                            "median_ratio_to_int8": 1.0, "peak_rss_mb": 930, "accounted_mb": 869.3,
                            "runtime_mb": 268.1}
    assert rows["fp32"]["ratio_to_fp32"] == [1.0, 1.0, 1.0] and rows["ct2_int8"]["median_ratio_to_ct2_int8"] == 1.0
    without_fp32 = summarize({**result, "variants": ["int8", "ct2_int8"]})
    assert [row["median_ratio"] for row in without_fp32] == [None, None]


@pytest.mark.e2e
def test_bench_train_quick(multi30k_2k, tmp_path):
    out = run(["scripts/bench_train.py", "--quick", "--max-update", "4", "--data-bin", multi30k_2k / "bin",
               "--work", tmp_path,
               "--json", tmp_path / "train.json"]).output
    report = json.loads((tmp_path / "train.json").read_text())
    (row,) = report["results"]
    assert row["arch"] == "transformer_wmt_en_fr_d2_h256" and row["params"] > 0
    (measured,) = row["rounds"]
    assert measured["grid"]["params"] == measured["stock"]["params"] == row["params"]
    for kind in ("grid", "stock"):
        run_ = measured[kind]
        assert run_["records"] == 2  # train_inner at updates 2 and 4 (--quick: --log-interval 2)
        assert run_["wps"] > 0 and 0 < run_["mean_target_len"] < run_["wpb"] <= 1024  # --quick: --max-tokens 1024
        assert row[f"{kind}_wps"] == [round(run_["wps"], 1)]
    assert row["ratios"] == [round(measured["grid"]["wps"] / measured["stock"]["wps"], 3)]
    assert row["median_ratio"] == row["ratios"][0] > 0
    assert (report["settings"]["max_update"], report["settings"]["rounds"]) == ("4", "1")
    assert (f"| transformer_wmt_en_fr_d2_h256 | {row['params']:,} | {row['grid_wps'][0]} | {row['stock_wps'][0]} | "
            f"{row['ratios'][0]} | {row['median_ratio']} |") in out


@pytest.mark.e2e
def test_bench_generate_quick(multi30k_2k, tmp_path):
    out = run(["scripts/bench_generate.py", "--quick", "--data-bin", multi30k_2k / "bin", "--work", tmp_path,
               "--variants", "fp32,pruned_int8", "--json", tmp_path / "generate.json"]).output
    report = json.loads((tmp_path / "generate.json").read_text())
    (result,) = report["results"]
    assert result["arch"] == "transformer_wmt_en_fr_d2_h256" and result["variants"] == ["fp32", "pruned_int8"]
    (measured,) = result["rounds"]  # --quick: 1 round of 16 sentences, 8 tokens + </s> each
    for variant in ("fp32", "pruned_int8"):
        assert (measured[variant]["sentences"], measured[variant]["tokens"]) == (16, 16 * 9)
        # fairseq's own tokens/s, from its timer before the line rounds the seconds to 0.1
        seconds = measured[variant]["seconds"]
        assert 144 / (seconds + 0.05) <= measured[variant]["tokens_per_s"] <= 144 / max(seconds - 0.05, 1e-9)
    speed = {v: measured[v]["tokens_per_s"] for v in ("fp32", "pruned_int8")}
    fp32, pruned = report["summary"]
    assert fp32.pop("peak_rss_mb") == round(measured["fp32"]["peak_rss_mb"]) > 100  # fairseq-generate's own peak
    assert fp32 == {"arch": result["arch"], "variant": "fp32", "tokens_per_s": [round(speed["fp32"], 1)],
                    "ratio_to_fp32": [1.0], "median_ratio": 1.0, "median_ratio_to_ct2_int8": None,
                    "median_ratio_to_int8": None, "accounted_mb": None, "runtime_mb": None}  # stock: no plugin line
    # The plugin's line: the int8 model runs the (unquantized) checkpoint's weights as int8 codes.
    assert pruned["runtime_mb"] < pruned["accounted_mb"] == measured["pruned_int8"]["fp32_mb"]
    ratio = round(speed["pruned_int8"] / speed["fp32"], 2)
    assert pruned["ratio_to_fp32"] == [ratio] and pruned["median_ratio"] == statistics.median([ratio])
    for row in (fp32, pruned):
        assert (f"| transformer_wmt_en_fr_d2_h256 | {row['variant']} | {row['tokens_per_s'][0]} | "
                f"{row['ratio_to_fp32'][0]} | {row['median_ratio']} | - |") in out
    assert "ratio to fp32" in out
    # The untrained checkpoint decoded is a real fairseq checkpoint of the benchmarked arch and vocabulary.
    state = torch.load(result["checkpoint"], map_location="cpu", weights_only=False)
    model_cfg = state["cfg"]["model"]  # fairseq keeps a legacy arch's config as its argparse Namespace
    assert (model_cfg["arch"] if isinstance(model_cfg, dict) else model_cfg.arch) == result["arch"]
    assert state["model"]["encoder.embed_tokens.weight"].shape == (4000, 256)  # --quick: 4k vocabulary
