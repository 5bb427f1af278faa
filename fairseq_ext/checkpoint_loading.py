"""How fairseq checkpoints and packed files load: safely, with one-line errors, atomically copied.

fairseq_ext.plugin installs these functions into fairseq's checkpoint_utils; this module patches nothing itself.

We keep safe loading on: the weights-only unpickler rebuilds tensors and plain containers, plus the few types
allowlisted here, which are exactly what fairseq and this plugin write into a checkpoint. Anything else (a
class, a function call) is refused. Users who trust an older file that needs more opt in explicitly with torch's
own switch, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, for that command only.

Packed compressed files (scripts/pack_checkpoint.py, no pickle at all) load wherever a checkpoint does; for a task
that runs --int4-kernels their <= 4-bit tensors stay codes, which the task builds its int4 modules from.

Errors fairseq users see are one line each: a refused pickle (UnsafeCheckpointError: file, type, opt-in), a
truncated or foreign checkpoint (ValueError), a checkpoint trained on another dictionary than the data folder's
(DictionaryMismatchError: both sizes). fairseq's copy of a fresh checkpoint to checkpoint_last.pt is made atomic
(AtomicCopies), so a kill during a save never leaves a truncated checkpoint_last.pt.
"""
import argparse
import contextvars
import functools
import os
import pickle
import re
import shutil

from fairseq.dataclass.utils import overwrite_args_by_name
from omegaconf import OmegaConf

from fairseq_ext.compression import load_compressed
from fairseq_ext.compression.int4 import MAX_BITS as INT4_MAX_BITS
from fairseq_ext.compression.packed import FORMAT as PACKED_FORMAT
from fairseq_ext.compression.packed import MAGIC, StoredQuantized

# fairseq stores the legacy `args` (and Namespace-valued config entries) as argparse.Namespace.
CHECKPOINT_SAFE_GLOBALS = [argparse.Namespace]


# A packed file holds no pickle (fairseq_ext.compression.packed); the plugin recognises it by its magic bytes in
# the one function every fairseq loader goes through, and this module hands fairseq the checkpoint-shaped dict it expects: the fairseq
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


class EnsembleLoad:
    """One call of fairseq's load_model_ensemble_and_task. ``int4``: whether its task runs --int4-kernels (None: no
    task was given, the checkpoint's config names it). ``header``: the header of the packed file just read, until
    the task's build_model takes it (take_packed_header): a compressed task reports what the file holds and refuses
    flags that disagree with it; with int4 kernels the file's <= 4-bit tensors were kept as codes."""

    def __init__(self, int4):
        self.int4, self.header = int4, None


_ENSEMBLE_LOAD = contextvars.ContextVar("fairseq_ext_ensemble_load", default=None)


def take_packed_header():
    """The header of the packed file the model being built now comes from, once; None for a .pt checkpoint."""
    load = _ENSEMBLE_LOAD.get()
    if load is None:
        return None
    header, load.header = load.header, None
    return header


def packed_checkpoint(path, arg_overrides=None):
    state_dict, metadata, header = load_compressed(path, keep_quantized_bits=INT4_MAX_BITS)
    if not (metadata or {}).get("cfg"):
        raise ValueError(f"{path} is a compressed model file without a fairseq config (not written by "
                         f"scripts/pack_checkpoint.py); it cannot be loaded as a fairseq checkpoint")
    cfg = OmegaConf.create(config_from_json(metadata["cfg"]), flags={"allow_objects": True})
    if arg_overrides is not None:
        overwrite_args_by_name(cfg, arg_overrides)  # the same override rules as for a .pt checkpoint
    load = _ENSEMBLE_LOAD.get()
    # No task given (fairseq-validate): the checkpoint's task config, with the command line's overrides, names it.
    task_int4 = bool((cfg.get("task") or {}).get("int4_kernels"))
    int4 = load is not None and (load.int4 if load.int4 is not None else task_int4)
    if load is not None:
        load.header = header
    if not int4:  # else the task builds its int4 modules from the codes, never from float32 weights
        dense = {}
        state_dict = {key: dense.setdefault(id(value), value.dense()) if isinstance(value, StoredQuantized) else value
                      for key, value in state_dict.items()}
    return {
        "args": None,
        "cfg": cfg,
        "model": state_dict,
        "optimizer_history": [{"num_updates": metadata.get("num_updates", 0)}],
        "extra_state": {},
        "packed_header": header,
    }


OPT_IN = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint whose pickle needs a type outside the allowlist: refused before anything in it ran."""


class DictionaryMismatchError(ValueError):
    """A checkpoint trained with another dictionary than the one of the data folder given."""


# torch's weights-only unpickler names the refused global in one of these forms (torch 2.6 .. 2.13).
_REFUSED_GLOBAL = (
    re.compile(r"Unsupported global: GLOBAL ([\w.]+)"),
    re.compile(r"unsupported GLOBAL ([\w.]+)"),
    re.compile(r"GLOBAL ([\w.]+)"),
)


def refused_type(message):
    """The type (module.name) torch's weights-only unpickler refused, from its error message; None when it refused
    no type (the bytes are no checkpoint's pickle: a damaged file, which no opt-in would make loadable)."""
    for pattern in _REFUSED_GLOBAL:
        match = pattern.search(message)
        if match:
            return match.group(1)
    return None


def unsafe_checkpoint_error(path, refused):
    return UnsafeCheckpointError(
        f"refusing to load {path}: it needs {refused}, which is not among the types fairseq and "
        f"fairseq_ext write into checkpoints; it was refused before anything in it ran. Only if you trust this file, "
        f"opt in for this one command: {OPT_IN} <your fairseq command>"
    )


def unreadable_checkpoint_error(path, error):
    size = os.path.getsize(path) if os.path.isfile(path) else None
    reason = (str(error) or type(error).__name__).split(". ")[0]
    if looks_packed(path):
        reason = f"it holds a packed file's header, but its first bytes are not {MAGIC!r}: a damaged .fxc file"
    return ValueError(
        f"cannot read checkpoint {path}"
        + (f" ({size} bytes)" if size is not None else "")
        + f": it is truncated or not a torch checkpoint ({reason})"
    )


def looks_packed(path, window=4096):
    """Whether a file that does not start with the packed magic holds a packed file's header near its start."""
    try:
        with open(path, "rb") as f:
            return PACKED_FORMAT.encode() in f.read(window)
    except OSError:
        return False


def load_safely(load_checkpoint_to_cpu, path, arg_overrides=None, *args, **kwargs):
    """fairseq's load_checkpoint_to_cpu, with torch's unpickling failures turned into one-line errors."""
    try:
        return load_checkpoint_to_cpu(path, arg_overrides, *args, **kwargs)
    except UnsafeCheckpointError:
        raise
    except pickle.UnpicklingError as error:
        refused = refused_type(str(error)) if "Weights only load failed" in str(error) else None
        if refused is not None:
            raise unsafe_checkpoint_error(path, refused) from None
        raise unreadable_checkpoint_error(path, error) from None
    except (RuntimeError, EOFError) as error:
        text = str(error)
        if isinstance(error, EOFError) or "PytorchStreamReader" in text or "zip archive" in text:
            raise unreadable_checkpoint_error(path, error) from None
        raise


# torch's load_state_dict error for one mismatched parameter.
_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S*(?:embed_tokens|embed_out|output_projection|lm_head)\S*): copying a param with shape "
    r"torch\.Size\(\[(\d+)[^\]]*\]\) from checkpoint, the shape in current model is torch\.Size\(\[(\d+)"
)


def dictionary_mismatch(filenames, task, error):
    """A DictionaryMismatchError for a load_state_dict size mismatch on a vocabulary-sized parameter, else None."""
    match = _SIZE_MISMATCH.search(str(error))
    if not match:
        return None
    key, saved, here = match.group(1), int(match.group(2)), int(match.group(3))
    data = getattr(getattr(task, "cfg", None), "data", None)
    return DictionaryMismatchError(
        f"dictionary mismatch: {', '.join(map(str, filenames))} was trained with a dictionary of {saved} entries "
        f"({key}), but the dictionary loaded here{f' from {data}' if data else ''} has {here} entries; pass the "
        f"data folder (dict.*.txt) the model was trained with"
    )


def loading_ensembles(load_model_ensemble_and_task):
    """fairseq's load_model_ensemble_and_task, with a vocabulary-size mismatch named (DictionaryMismatchError), and
    packed files read into codes for a task that runs --int4-kernels (EnsembleLoad)."""

    @functools.wraps(load_model_ensemble_and_task)
    def load(filenames, arg_overrides=None, task=None, *args, **kwargs):
        int4 = None if task is None else bool(getattr(getattr(task, "cfg", None), "int4_kernels", False))
        token = _ENSEMBLE_LOAD.set(EnsembleLoad(int4))
        try:
            return load_model_ensemble_and_task(filenames, arg_overrides, task, *args, **kwargs)
        except RuntimeError as error:
            mismatch = dictionary_mismatch(filenames, task, error)
            if mismatch is None:
                raise
            raise mismatch from None
        finally:
            _ENSEMBLE_LOAD.reset(token)

    return load


class AtomicCopies:
    """fairseq's PathManager, as checkpoint_utils sees it, with an atomic copy for local files.

    fairseq writes the first checkpoint of a save atomically (torch_persistent_save: "<name>.tmp", then a rename)
    but then *copies* it to the other names of that save (checkpoint_last.pt, checkpoint_best.pt) with a plain
    shutil.copyfile: a kill during that copy leaves a truncated checkpoint_last.pt, the file a resume reads. Here
    the copy goes to "<name>.tmp" and is renamed over the name, so a kill leaves the previous file intact."""

    def __init__(self, path_manager):
        self._path_manager = path_manager

    def __getattr__(self, name):
        return getattr(self._path_manager, name)

    def copy(self, src_path, dst_path, overwrite=False):
        if not (self._path_manager.supports_rename(src_path) and self._path_manager.supports_rename(dst_path)):
            return self._path_manager.copy(src_path, dst_path, overwrite=overwrite)
        if not overwrite and os.path.exists(dst_path):
            return False
        temporary = f"{dst_path}.tmp"
        shutil.copyfile(src_path, temporary)
        os.replace(temporary, dst_path)
        return True

