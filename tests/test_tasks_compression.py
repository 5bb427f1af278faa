"""The compressed_* tasks in process (seconds): flags, start-up checks, the training hooks, the validate guard."""
import argparse
import copy
import re

import pytest
import torch
from fairseq import options
from fairseq.data import Dictionary
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY
from omegaconf import OmegaConf

from clitools import REPO, run
from fairseq_ext.compression import CompressionSpec, sparsity_at
from fairseq_ext.tasks.compressed_tasks import COMPRESSED_VARIANT_OF
from fairseq_ext.tasks.compression_checks import (
    check_compression_config,
    check_packed_file,
    compression_problems,
    refuse_calibration_in_training,
    unused_flags,
)
from fairseq_ext.tasks.compression_config import COMPRESSION_FIELDS, compression_spec
from fairseq_ext.tasks.compression_overrides import dropped_compression_flags, dropped_flags_message

FLAGS = ["--prune-sparsity", "--prune-scope", "--prune-embeddings", "--prune-method", "--prune-pattern",
         "--prune-schedule", "--prune-start-update", "--prune-end-update", "--prune-every", "--prune-fraction",
         "--quant-bits", "--quant-scheme", "--quant-granularity", "--quant-group-size", "--quant-method",
         "--quant-skip-embeddings", "--quant-aware", "--calib-subset", "--calib-samples", "--calib-seed"]


def parse(*argv, data="/no/data"):
    parser = options.get_training_parser()
    return options.parse_args_and_arch(parser, [data, "--user-dir", str(REPO / "fairseq_ext"), *argv])


def test_three_compressed_tasks_extend_the_stock_ones_with_the_same_flags():
    assert COMPRESSED_VARIANT_OF == {"compressed_translation": "translation", "compressed_masked_lm": "masked_lm",
                                     "compressed_sentence_prediction": "sentence_prediction"}
    for name, stock in COMPRESSED_VARIANT_OF.items():
        assert issubclass(TASK_REGISTRY[name], TASK_REGISTRY[stock])
        fields = set(TASK_DATACLASS_REGISTRY[name].__dataclass_fields__)
        decoding = {"stock_generator"} if name == "compressed_translation" else set()  # the lean decoder's switch
        assert fields == set(TASK_DATACLASS_REGISTRY[stock].__dataclass_fields__) | set(COMPRESSION_FIELDS) | {
            "autocast_bf16"} | decoding
    assert set(FLAGS) <= {"--" + f.replace("_", "-") for f in COMPRESSION_FIELDS}


def test_flags_parse_with_their_defaults_off():
    args = parse("--task", "compressed_translation", "--arch", "transformer")
    assert (args.prune_sparsity, args.quant_bits, args.prune_schedule, args.quant_aware) == (0.0, 32, "oneshot", False)
    args = parse("--task", "compressed_masked_lm", "--arch", "roberta_d3_h256", "--prune-sparsity", "0.5",
                 "--prune-scope", "layer", "--prune-embeddings", "--prune-schedule", "gradual", "--prune-start-update",
                 "2", "--prune-end-update", "10", "--prune-every", "2", "--quant-bits", "4", "--quant-scheme",
                 "asymmetric", "--quant-granularity", "tensor", "--quant-skip-embeddings", "--quant-aware")
    assert (args.prune_sparsity, args.prune_scope, args.prune_embeddings, args.prune_schedule) == (0.5, "layer", True,
                                                                                                    "gradual")
    assert (args.prune_start_update, args.prune_end_update, args.prune_every) == (2, 10, 2)
    assert (args.quant_bits, args.quant_scheme, args.quant_granularity) == (4, "asymmetric", "tensor")
    assert args.quant_skip_embeddings and args.quant_aware
    new_options = (args.prune_method, args.prune_pattern, args.quant_method, args.quant_group_size)
    assert new_options == ("magnitude", "unstructured", "rtn", 0)
    assert (args.calib_subset, args.calib_samples, args.calib_seed) == ("train", 128, 1)
    args = parse("--task", "compressed_translation", "--arch", "transformer", "--prune-sparsity", "0.5",
                 "--prune-method", "sparsegpt", "--prune-pattern", "2:4", "--quant-bits", "4", "--quant-method",
                 "gptq", "--quant-granularity", "group", "--quant-group-size", "64", "--calib-subset", "valid",
                 "--calib-samples", "32", "--calib-seed", "7")
    assert (args.prune_method, args.prune_pattern, args.quant_method) == ("sparsegpt", "2:4", "gptq")
    assert (args.quant_granularity, args.quant_group_size) == ("group", 64)
    assert (args.calib_subset, args.calib_samples, args.calib_seed) == ("valid", 32, 7)
    assert compression_spec(args) == CompressionSpec(sparsity=0.5, bits=4, granularity="group", group_size=64,
                                                     prune_method="sparsegpt", prune_pattern="2:4", quant_method="gptq")


def config(**flags):
    return argparse.Namespace(**{**{f: getattr(TASK_DATACLASS_REGISTRY["compressed_translation"](), f)
                                    for f in COMPRESSION_FIELDS}, **flags})


@pytest.mark.parametrize("flags, expected", [
    ({"quant_aware": True}, ["--quant-aware", "--quant-bits 2..8"]),
    ({"prune_sparsity": 1.0}, ["--prune-sparsity", "[0, 1)"]),
    ({"quant_bits": 12}, ["--quant-bits=12: allowed values are 2, 3, 4, 5, 6, 7, 8, 16, 32"]),
    ({"prune_sparsity": 0.5, "prune_schedule": "gradual"}, ["--prune-schedule gradual", "--prune-end-update"]),
    ({"prune_sparsity": 0.5, "prune_start_update": 20, "prune_end_update": 10}, ["ends before it starts",
                                                                               "--prune-end-update 10"]),
    ({"prune_sparsity": 0.5, "prune_schedule": "iterative"}, ["--prune-fraction", "(0, 1)"]),
    ({"prune_sparsity": 0.5, "prune_fraction": 0.2}, ["--prune-fraction", "only applies", "iterative"]),
    ({"prune_every": 0}, ["--prune-every", ">= 1"]),
    ({"prune_method": "obs"}, ["--prune-method='obs': allowed values are 'magnitude', 'wanda', 'sparsegpt'"]),
    ({"prune_sparsity": 0.6, "prune_pattern": "2:4"}, ["--prune-pattern '2:4' needs --prune-sparsity 0.5 (got 0.6)"]),
    ({"quant_method": "gptq"}, ["--quant-method 'gptq' needs --quant-bits 2..8 (got 32)"]),
    ({"quant_bits": 4, "quant_granularity": "group"},
     ["--quant-granularity 'group' needs --quant-group-size >= 1, an integer (got 0)"]),
    ({"quant_bits": 4, "quant_granularity": "group", "quant_group_size": -64},
     ["--quant-granularity 'group' needs --quant-group-size >= 1, an integer (got -64)"]),
    ({"calib_samples": 0}, ["--calib-samples must be >= 1 (got 0)"]),
    ({"calib_subset": ""}, ["--calib-subset must name a data subset"]),
    ({"calib_seed": -1}, ["--calib-seed must be an integer in [0, 2**32), numpy's seeds (got -1)"]),
])
def test_each_contradiction_names_its_flags(flags, expected):
    problems = compression_problems(config(**flags))
    assert len(problems) == 1 and all(text in problems[0] for text in expected), problems


def test_the_core_checks_the_spec_and_the_task_names_its_flags():
    # One problem each from the core (sparsity, 2:4, gptq, group size) and from the task (schedule, calibration).
    problems = compression_problems(config(prune_sparsity=1.5, prune_pattern="2:4", quant_method="gptq",
                                           quant_granularity="group", prune_every=0, calib_samples=-1))
    assert problems == [
        "--prune-sparsity=1.5: must be a number in [0, 1)",
        "--quant-granularity 'group' needs --quant-group-size >= 1, an integer (got 0)",
        "--prune-pattern '2:4' needs --prune-sparsity 0.5 (got 1.5)",
        "--quant-method 'gptq' needs --quant-bits 2..8 (got 32)",
        "--prune-every must be >= 1 (got 0)",
        "--calib-samples must be >= 1 (got -1)",
    ]


def test_a_calibration_subset_the_data_lacks_is_named_with_those_it_has(tmp_path):
    for name in ("train.en-fr.en.bin", "valid.en-fr.fr.bin", "test.en-fr.en.idx", "dict.en.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "input0").mkdir()
    (tmp_path / "input0" / "dev.bin").write_bytes(b"")  # sentence prediction keeps its inputs one folder down
    gptq = dict(data=str(tmp_path), quant_bits=4, quant_method="gptq")
    assert compression_problems(config(**gptq, calib_subset="nonexistent")) == [
        "--calib-subset nonexistent: the data folder has no such subset; it has dev, train, valid"]
    assert compression_problems(config(**gptq, calib_subset="valid")) == []
    # Round-to-nearest reads no calibration data: the flag is unused (a warning), not wrong.
    assert compression_problems(config(data=str(tmp_path), quant_bits=4, calib_subset="nonexistent")) == []


def test_a_packed_file_refuses_flags_that_disagree_with_what_it_holds():
    header = {"spec": CompressionSpec(sparsity=0.5, bits=4).to_dict()}
    check_packed_file(header, CompressionSpec(), int4_kernels=False)  # no flags: the file's own figures
    check_packed_file(header, CompressionSpec(sparsity=0.5, bits=4), int4_kernels=False)  # the file's flags
    with pytest.raises(ValueError, match=r"^a packed file holds its weights compressed already; the compression "
                                         r"flags ask for bits 8 \(the file: 4\): drop the --prune-\*/--quant-\* "
                                         r"flags, or give the file's$"):
        check_packed_file(header, CompressionSpec(sparsity=0.5, bits=8), int4_kernels=False)


@pytest.mark.parametrize("flags, unused", [
    ({"quant_bits": 4, "quant_group_size": 128}, ["quant_group_size"]),  # channel granularity: no groups
    ({"quant_granularity": "group", "quant_group_size": 128}, ["quant_granularity", "quant_group_size"]),
    ({"quant_bits": 4, "quant_granularity": "group", "quant_group_size": 128}, []),
    ({"prune_method": "wanda"}, ["prune_method"]),
    ({"calib_samples": 64, "calib_subset": "valid", "calib_seed": 3}, ["calib_subset", "calib_samples", "calib_seed"]),
    ({"prune_sparsity": 0.5, "calib_samples": 64}, ["calib_samples"]),  # magnitude pruning reads no data
    ({"prune_sparsity": 0.5, "prune_method": "wanda", "calib_samples": 64}, []),
    ({"prune_sparsity": 0.5, "prune_pattern": "2:4", "calib_seed": 3}, []),
    ({"quant_bits": 4, "quant_method": "gptq", "calib_subset": "valid"}, []),
])
def test_flags_that_cannot_act_are_named(flags, unused):
    assert unused_flags(config(**flags)) == unused


def test_unused_flags_are_a_warning_not_an_error(caplog):
    with caplog.at_level("WARNING", logger="fairseq_ext.tasks.compression_checks"):
        check_compression_config(config(quant_bits=4, quant_group_size=128, calib_samples=64))
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("--quant-group-size, --calib-samples have no effect: ")
    assert "--quant-group-size only with --quant-granularity group" in message
    assert "--calib-* flags only with a calibrated method" in message
    assert compression_spec(config(quant_bits=4, quant_group_size=128)).group_size == 0


@pytest.mark.parametrize("flags, named", [
    ({"prune_sparsity": 0.5, "prune_method": "wanda"}, "--prune-method wanda: fairseq-train prunes by magnitude"),
    ({"prune_sparsity": 0.5, "prune_method": "sparsegpt", "prune_pattern": "2:4", "quant_bits": 4,
      "quant_method": "gptq"}, "--prune-method sparsegpt, --prune-pattern 2:4, --quant-method gptq: fairseq-train"),
    ({"prune_sparsity": 0.5, "prune_pattern": "2:4"}, "--prune-pattern 2:4: fairseq-train prunes by magnitude"),
])
def test_training_refuses_the_calibrated_methods(flags, named):
    with pytest.raises(ValueError) as error:
        refuse_calibration_in_training(config(**flags))
    assert str(error.value).startswith(named) and "drop them from this command" in str(error.value)


@pytest.mark.parametrize("flags", [{}, {"prune_sparsity": 0.5, "quant_bits": 4, "quant_granularity": "group",
                                        "quant_group_size": 8}, {"prune_method": "wanda"}])
def test_training_accepts_magnitude_and_round_to_nearest(flags):
    refuse_calibration_in_training(config(**flags))  # (an unused --prune-method is a warning, not a refusal)


def test_all_problems_are_reported_together_at_task_start_up():
    cfg = TASK_DATACLASS_REGISTRY["compressed_translation"](prune_sparsity=1.2, quant_aware=True,
                                                            prune_schedule="gradual")
    d = Dictionary()
    with pytest.raises(ValueError) as error:
        TASK_REGISTRY["compressed_translation"](cfg, d, d)
    message = str(error.value)
    assert "3 problems" in message
    assert all(f in message for f in ["--prune-sparsity", "--quant-aware", "--prune-end-update"])


TINY_MODEL = dict(
    arch="transformer", encoder_layers=1, decoder_layers=1, encoder_embed_dim=16, decoder_embed_dim=16,
    encoder_ffn_embed_dim=32, decoder_ffn_embed_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
    share_all_embeddings=True)


def tiny_task_and_model(from_checkpoint=False, **flags):
    """A compressed_translation task on a 44-word dictionary and its tiny transformer, built as fairseq does."""
    d = Dictionary()
    for i in range(40):
        d.add_symbol(f"w{i}")
    cfg = TASK_DATACLASS_REGISTRY["compressed_translation"](**flags)
    task = TASK_REGISTRY["compressed_translation"](cfg, d, d)
    torch.manual_seed(0)
    return task, task.build_model(argparse.Namespace(**TINY_MODEL), from_checkpoint=from_checkpoint)


def test_a_group_size_that_does_not_tile_every_width_is_one_line_naming_the_sizes_that_do():
    with pytest.raises(ValueError) as error:  # widths 16 and 32: every matrix misfits
        tiny_task_and_model(from_checkpoint=True, quant_bits=4, quant_granularity="group", quant_group_size=7)
    assert re.fullmatch(r"--quant-group-size 7 does not divide the width of (\d+) of the \1 quantized matrices "
                        r"\(e\.g\. \S+, (16|32) columns\); the sizes that divide every width: 1, 2, 4, 8, 16",
                        str(error.value)), str(error.value)


class NoisyOptimizer:
    """Stands in for fairseq's optimizer: each step moves every weight, pruned ones included (like Adam momentum)."""

    def __init__(self, model):
        self.model, self.update = model, 0

    def step(self):
        generator = torch.Generator().manual_seed(self.update)
        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 0.01)
        self.update += 1


def prunable_sparsity(task, model):
    weights = task._prunable(model)
    return sum(int((w == 0).sum()) for w in weights.values()) / sum(w.numel() for w in weights.values())


SCHEDULE = dict(prune_sparsity=0.6, prune_schedule="gradual", prune_start_update=2, prune_end_update=10, prune_every=2)


def test_masks_follow_the_schedule_after_every_step_and_a_fresh_process_derives_the_same_masks():
    task, model = tiny_task_and_model(**SCHEDULE)
    optimizer = NoisyOptimizer(model)
    snapshot = None
    for update in range(12):
        task.optimizer_step(optimizer, model, update)
        expected = sparsity_at(update + 1, schedule="gradual", target=0.6, start=2, end=10, every=2)
        assert prunable_sparsity(task, model) == pytest.approx(expected, abs=1e-3), update + 1
        if update + 1 == 5:  # what checkpoint_5 would hold
            snapshot = copy.deepcopy(model.state_dict())

    resumed_task, resumed = tiny_task_and_model(**SCHEDULE)  # a new process resuming from checkpoint_5
    resumed.load_state_dict(snapshot)
    optimizer = NoisyOptimizer(resumed)
    optimizer.update = 5
    resumed_task._prune_to(resumed, sparsity_at(5, schedule="gradual", target=0.6, start=2, end=10, every=2))
    for update in range(5, 12):
        resumed_task.optimizer_step(optimizer, resumed, update)
    assert resumed_task._masks.keys() == task._masks.keys()
    assert all(torch.equal(resumed_task._masks[k], task._masks[k]) for k in task._masks)
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), model.state_dict().values()))


def test_a_checkpoint_loaded_by_an_evaluation_tool_is_compressed_once_and_logged(caplog):
    _, trained = tiny_task_and_model()
    state = copy.deepcopy(trained.state_dict())
    _, loaded = tiny_task_and_model(from_checkpoint=True, prune_sparsity=0.5, quant_bits=4)
    assert torch.equal(loaded.encoder.layers[0].fc1.weight, trained.encoder.layers[0].fc1.weight)  # not yet
    with caplog.at_level("INFO", logger="fairseq_ext.tasks.compression"):
        loaded.load_state_dict(state)  # what load_model_ensemble_and_task does after build_model
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("compressed {")]
    assert len(lines) == 1 and '"sparsity": 0.5' in lines[0] and '"bits": 4' in lines[0]
    linear = loaded.encoder.layers[0].fc1.weight
    assert (linear == 0).any()
    assert all(len(torch.unique(row)) <= 16 for row in linear)  # 4 bits: at most 16 levels per output channel


def test_training_builds_register_no_load_hook():
    task, model = tiny_task_and_model(prune_sparsity=0.5, quant_bits=4)
    state = copy.deepcopy(model.state_dict())
    model.load_state_dict(state)  # fairseq-train restoring checkpoint_last.pt: the schedule decides, not the load
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), state.values()))


def test_validate_guard_names_the_dropped_flags_and_both_ways_out():
    saved = OmegaConf.create({"task": {"_name": "translation", "data": "x"}})
    overrides = {"task": "compressed_translation", "prune_sparsity": 0.6, "quant_bits": 4, "max_tokens": 100}
    assert dropped_compression_flags(saved, overrides) == ["prune_sparsity", "quant_bits"]
    assert dropped_compression_flags(saved, {"max_tokens": 100}) == []
    retargeted = OmegaConf.create({"task": {"_name": "compressed_translation", "prune_sparsity": 0.0,
                                            "quant_bits": 32}})
    assert dropped_compression_flags(retargeted, overrides) == []
    message = dropped_flags_message("ck.pt", "translation", ["prune_sparsity", "quant_bits"], overrides)
    assert "--prune-sparsity, --quant-bits" in message and "scripts/retarget_checkpoint.py ck.pt --out" in message
    assert """--model-overrides "{'task': {'_name': 'compressed_translation', 'prune_sparsity': 0.6, 'quant_bits': 4}}\"""" \
        in message
