"""The compressed_* tasks in process (seconds): flags, start-up checks, the training hooks, the validate guard."""
import argparse
import copy

import pytest
import torch
from fairseq import options
from fairseq.data import Dictionary
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY
from omegaconf import OmegaConf

from clitools import REPO, run
from fairseq_ext.compression import sparsity_at
from fairseq_ext.tasks.compressed_tasks import COMPRESSED_VARIANT_OF
from fairseq_ext.tasks.compression_config import COMPRESSION_FIELDS, compression_problems
from fairseq_ext.tasks.compression_overrides import dropped_compression_flags, dropped_flags_message

FLAGS = ["--prune-sparsity", "--prune-scope", "--prune-embeddings", "--prune-schedule", "--prune-start-update",
         "--prune-end-update", "--prune-every", "--prune-fraction", "--quant-bits", "--quant-scheme",
         "--quant-granularity", "--quant-skip-embeddings", "--quant-aware"]


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


def config(**flags):
    return argparse.Namespace(**{**{f: getattr(TASK_DATACLASS_REGISTRY["compressed_translation"](), f)
                                    for f in COMPRESSION_FIELDS}, **flags})


@pytest.mark.parametrize("flags, expected", [
    ({"quant_aware": True}, ["--quant-aware", "--quant-bits 2..8"]),
    ({"prune_sparsity": 1.0}, ["--prune-sparsity", "[0, 1)"]),
    ({"quant_bits": 12}, ["--quant-bits", "2..8", "16/32"]),
    ({"prune_sparsity": 0.5, "prune_schedule": "gradual"}, ["--prune-schedule gradual", "--prune-end-update"]),
    ({"prune_sparsity": 0.5, "prune_start_update": 20, "prune_end_update": 10}, ["ends before it starts",
                                                                               "--prune-end-update 10"]),
    ({"prune_sparsity": 0.5, "prune_schedule": "iterative"}, ["--prune-fraction", "(0, 1)"]),
    ({"prune_sparsity": 0.5, "prune_fraction": 0.2}, ["--prune-fraction", "only applies", "iterative"]),
    ({"prune_every": 0}, ["--prune-every", ">= 1"]),
])
def test_each_contradiction_names_its_flags(flags, expected):
    problems = compression_problems(config(**flags))
    assert len(problems) == 1 and all(text in problems[0] for text in expected), problems


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
