"""A fairseq checkpoint's model, rebuilt by fairseq from the saved config, with the compression flags chosen here.

scripts/pack_checkpoint.py (writes the packed file) and scripts/shrink_ffn_checkpoint.py (removes FFN neurons) both
start from the model exactly as saved. A checkpoint trained by a compressed_* task would compress on load with the
flags saved in its task config: ``load_model`` replaces them (by default with every field off).

The checkpoint's task and arch must be registered with fairseq: the plugin's (compressed_* tasks, grid archs) when
the checkpoint was trained with --user-dir fairseq_ext.
"""
from fairseq import checkpoint_utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from omegaconf import open_dict

from .compression_config import COMPRESSION_FIELDS, CompressionConfig


def load_model(checkpoint, data=None, compression=None):
    """(the checkpoint's state, its model, its task), built by fairseq from the saved config with the weights exactly as saved.
    A compressed_* task compresses on load with its saved flags: ``compression`` ({field: value}; default: every
    field at its off default) replaces them. ``data``: where the dictionaries are now, if they moved."""
    defaults = CompressionConfig()
    compression = compression or {name: getattr(defaults, name) for name in COMPRESSION_FIELDS}
    state = checkpoint_utils.load_checkpoint_to_cpu(str(checkpoint))
    if state.get("cfg") is None:  # legacy checkpoint: argparse Namespace
        state["cfg"], state["args"] = convert_namespace_to_omegaconf(state["args"]), None
    with open_dict(state["cfg"].task):
        if data:
            state["cfg"].task.data = data
        for name in COMPRESSION_FIELDS:
            if name in state["cfg"].task:
                state["cfg"].task[name] = compression[name]
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], state=state)
    return state, models[0], task
