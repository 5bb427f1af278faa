"""--int8-kernels, --int8-engine, --prune-heads, --prune-ffn in the compressed_* tasks, in process (seconds): parsing,
start-up checks naming the flag, the load hook (after --quant-bits), refusal in training and on GPU/fp16."""
import argparse

import pytest
import torch
from fairseq import options
from fairseq.data import Dictionary
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY
from torch import nn

from clitools import REPO
from fairseq_ext.compression.int8 import Int8Linear, count_calls

TINY_MODEL = dict(
    arch="transformer", encoder_layers=1, decoder_layers=1, encoder_embed_dim=32, decoder_embed_dim=32,
    encoder_ffn_embed_dim=64, decoder_ffn_embed_dim=64, encoder_attention_heads=4, decoder_attention_heads=4,
    share_all_embeddings=True, dropout=0.0)


def task_and_model(from_checkpoint=True, **flags):
    d = Dictionary()
    for i in range(40):
        d.add_symbol(f"w{i}")
    cfg = TASK_DATACLASS_REGISTRY["compressed_translation"](**flags)
    task = TASK_REGISTRY["compressed_translation"](cfg, d, d)
    torch.manual_seed(0)
    return task, task.build_model(argparse.Namespace(**TINY_MODEL), from_checkpoint=from_checkpoint)


def load(model):
    """What fairseq does right after building the model: load the checkpoint's weights (fires the hooks). With
    kernels on, the model was built without float weights (on the meta device): the checkpoint is a float model of
    the same arch and seed."""
    model.load_state_dict(task_and_model(from_checkpoint=False)[1].state_dict())
    return model


def parse(*flags):
    parser = options.get_training_parser()  # the task's flags are the same in every fairseq tool
    return options.parse_args_and_arch(parser, ["/no/data", "--user-dir", str(REPO / "fairseq_ext"), "--task",
                                                "compressed_translation", "--arch", "transformer", *flags])


def test_flags_parse():
    args = parse("--int8-kernels", "--int8-engine", "x86", "--prune-heads", "0.5", "--prune-ffn", "0.25")
    assert (args.int8_kernels, args.int8_engine, args.prune_heads, args.prune_ffn) == (True, "x86", 0.5, 0.25)
    args = parse()
    assert (args.int8_kernels, args.int8_engine, args.prune_heads, args.prune_ffn) == (False, "auto", 0.0, 0.0)


@pytest.mark.parametrize("flags, expected", [
    ({"prune_heads": 1.0}, ["--prune-heads", "[0, 1)", "attention heads"]),
    ({"prune_ffn": -0.5}, ["--prune-ffn", "[0, 1)", "FFN neurons"]),
])
def test_bad_fractions_stop_the_task_at_start_up(flags, expected):
    with pytest.raises(ValueError) as error:
        task_and_model(**flags)
    assert all(text in str(error.value) for text in expected), str(error.value)


def test_unavailable_engine_is_named(monkeypatch):
    import fairseq_ext.tasks.compression_checks as flags

    monkeypatch.setattr(flags, "int8_engine", lambda engine: None)  # as on a torch build without that engine
    with pytest.raises(ValueError, match=r"--int8-engine onednn is not available.*--int8-engine auto"):
        task_and_model(int8_kernels=True, int8_engine="onednn")


def test_load_hook_prunes_then_converts_to_int8():
    task, model = task_and_model(quant_bits=8, prune_heads=0.5, prune_ffn=0.5, int8_kernels=True)
    assert isinstance(model.encoder.layers[0].fc1, nn.Linear)  # nothing happens before the weights are loaded
    load(model)
    layer = model.decoder.layers[0]
    assert layer.self_attn.num_heads == 2 and layer.encoder_attn.num_heads == 2
    assert layer.fc1.in_features == 32 and layer.fc1.out_features == 32 and layer.fc2.in_features == 32
    assert isinstance(layer.fc1, Int8Linear) and isinstance(model.decoder.output_projection, Int8Linear)
    assert not any(type(m) is nn.Linear for m in model.modules())
    src = torch.randint(4, 44, (2, 6))
    src[:, -1] = 2
    with torch.no_grad(), count_calls(model) as calls:
        model(src, torch.full((2,), 6), src)
    assert calls["encoder.layers.0.self_attn.q_proj"] == 1


def test_int8_model_refuses_gpu_and_half_with_the_flag_message():
    _, model = task_and_model(int8_kernels=True)
    load(model)
    with pytest.raises(ValueError, match="--int8-kernels.*--cpu.*--fp16/--bf16"):
        model.half()
    with pytest.raises(ValueError, match="--int8-kernels"):
        model.to(torch.bfloat16)
    model.float()  # a no-op move stays allowed
    model.to("cpu")


def test_speed_flags_are_refused_in_training():
    with pytest.raises(ValueError, match="--int8-kernels act.*not in fairseq-train"):
        task_and_model(from_checkpoint=False, int8_kernels=True)
    with pytest.raises(ValueError, match="--prune-heads, --prune-ffn act"):
        task_and_model(from_checkpoint=False, prune_heads=0.5, prune_ffn=0.5)


def test_flags_off_leave_the_model_float():
    _, model = task_and_model()
    load(model)
    assert not any(isinstance(m, Int8Linear) for m in model.modules())
    assert model.encoder.layers[0].self_attn.num_heads == 4
