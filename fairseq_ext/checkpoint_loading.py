"""fairseq checkpoints load under torch >= 2.6, whose torch.load defaults to weights_only=True.

We keep safe loading on: the weights-only unpickler rebuilds tensors and plain containers, plus the few types
allowlisted here, which are exactly what fairseq and this plugin write into a checkpoint. Anything else (a
class, a function call) is refused. Users who trust an older file that needs more opt in explicitly with torch's
own switch, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, for that command only.

Packed compressed files (scripts/pack_checkpoint.py, no pickle at all) load wherever a checkpoint does.
"""
import argparse
import functools

import torch
from fairseq import checkpoint_utils
from fairseq.dataclass.utils import overwrite_args_by_name
from omegaconf import OmegaConf

from fairseq_ext.compression import load_compressed
from fairseq_ext.compression.packed import MAGIC

# fairseq stores the legacy `args` (and Namespace-valued config entries) as argparse.Namespace.
CHECKPOINT_SAFE_GLOBALS = [argparse.Namespace]

torch.serialization.add_safe_globals(CHECKPOINT_SAFE_GLOBALS)


# A packed file holds no pickle (fairseq_ext.compression.packed); we recognise it by its magic bytes in the one
# function every fairseq loader goes through, and hand fairseq the checkpoint-shaped dict it expects: the fairseq
# config stored in the file's metadata, the dense state_dict, and the update count. `fairseq-generate --path
# model.fxc` then runs on the compressed weights exactly as a .pt checkpoint would.


NAMESPACE_KEY = "__argparse_namespace__"


def config_to_json(value):
    """fairseq's saved cfg (plain containers) as JSON: an argparse.Namespace (fairseq keeps the config of
    argparse-configured models, cfg.model, as one) becomes {NAMESPACE_KEY: {...}}, restored by config_from_json."""
    if isinstance(value, argparse.Namespace):
        return {NAMESPACE_KEY: config_to_json(vars(value))}
    if isinstance(value, dict):
        return {str(k): config_to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [config_to_json(v) for v in value]
    return value


def config_from_json(value):
    if isinstance(value, dict):
        if set(value) == {NAMESPACE_KEY}:
            return argparse.Namespace(**config_from_json(value[NAMESPACE_KEY]))
        return {k: config_from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [config_from_json(v) for v in value]
    return value


def is_packed(path):
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False  # not a local file: fairseq's own loader reports it


def packed_checkpoint(path, arg_overrides=None):
    state_dict, metadata, header = load_compressed(path)
    if not (metadata or {}).get("cfg"):
        raise ValueError(f"{path} is a compressed model file without a fairseq config (not written by "
                         f"scripts/pack_checkpoint.py); it cannot be loaded as a fairseq checkpoint")
    cfg = OmegaConf.create(config_from_json(metadata["cfg"]), flags={"allow_objects": True})
    if arg_overrides is not None:
        overwrite_args_by_name(cfg, arg_overrides)  # the same override rules as for a .pt checkpoint
    return {
        "args": None,
        "cfg": cfg,
        "model": state_dict,
        "optimizer_history": [{"num_updates": metadata.get("num_updates", 0)}],
        "extra_state": {},
        "packed_header": header,
    }


def loading_packed_files(load_checkpoint_to_cpu):
    @functools.wraps(load_checkpoint_to_cpu)
    def load(path, arg_overrides=None, *args, **kwargs):
        if is_packed(path):
            return packed_checkpoint(path, arg_overrides)
        return load_checkpoint_to_cpu(path, arg_overrides, *args, **kwargs)

    load.loads_packed_files = True
    return load


# Idempotent: the plugin may be imported twice in one process (as fairseq_ext and through --user-dir).
if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "loads_packed_files", False):
    checkpoint_utils.load_checkpoint_to_cpu = loading_packed_files(checkpoint_utils.load_checkpoint_to_cpu)
