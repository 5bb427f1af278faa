"""Refuse a compression flag that fairseq would silently drop when it reloads a checkpoint's saved config.

fairseq-validate builds its task from the checkpoint's ``cfg.task`` and applies the command line only to keys that
config already has (``checkpoint_utils.load_checkpoint_to_cpu`` -> ``overwrite_args_by_name``); ``--task`` itself is
not applied. So ``fairseq-validate --task compressed_translation --prune-sparsity 0.6`` on a checkpoint trained by
the stock ``translation`` task would validate the dense model. fairseq_ext.plugin calls
``refuse_dropped_compression_flags`` in its ``load_checkpoint_to_cpu`` (the one place where the overrides meet the
saved config), which fails with the two ways to proceed instead.
"""
import shlex

from .compressed_tasks import COMPRESSED_VARIANT_OF
from .compression_config import COMPRESSION_FIELDS, flag

RETARGET_SCRIPT = "scripts/retarget_checkpoint.py"


def dropped_compression_flags(saved_cfg, arg_overrides):
    """The compression overrides that the saved config has no key for (fairseq would ignore them)."""
    task_cfg = saved_cfg.get("task") if saved_cfg is not None else None
    given = [k for k in COMPRESSION_FIELDS if k in (arg_overrides or {})]
    if task_cfg is None:  # legacy checkpoints keep an argparse Namespace, which takes every override
        return []
    return [k for k in given if k not in task_cfg]


def dropped_flags_message(path, saved_task, dropped, arg_overrides):
    stock = saved_task if saved_task in COMPRESSED_VARIANT_OF.values() else None
    target = f"compressed_{stock}" if stock else (saved_task if saved_task in COMPRESSED_VARIANT_OF else None)
    flags = ", ".join(flag(k) for k in dropped)
    lines = [
        f"{path} was saved by task '{saved_task}', whose config has no {flags}; fairseq-validate takes the task from "
        f"the checkpoint and would ignore {'them' if len(dropped) > 1 else 'it'}, validating the uncompressed model."
    ]
    if target is None:
        lines.append(f"Compression is available for the tasks {', '.join(sorted(COMPRESSED_VARIANT_OF.values()))} "
                     f"(as {', '.join(sorted(COMPRESSED_VARIANT_OF))}).")
        return "\n".join(lines)
    out = str(path).removesuffix(".pt") + ".compressed.pt"
    task_overrides = {"_name": target, **{k: arg_overrides[k] for k in dropped}}
    lines += [
        "To proceed, either",
        f"  retarget the checkpoint once (weights unchanged): python {RETARGET_SCRIPT} {shlex.quote(str(path))} "
        f"--out {shlex.quote(out)}",
        "  and run the same fairseq-validate command on the new file, or",
        # Double quotes around a Python literal whose strings are flag values (no quotes, $ or backslashes in them).
        f'  add: --model-overrides "{repr({"task": task_overrides})}"',
    ]
    return "\n".join(lines)


def refuse_dropped_compression_flags(path, state, arg_overrides):
    """Raise ValueError if a compression override has no key in the loaded checkpoint's saved task config."""
    dropped = dropped_compression_flags(state.get("cfg"), arg_overrides)
    if not dropped:
        return
    saved_task = state["cfg"]["task"].get("_name")
    if "packed_header" in state:  # retargeting does not apply: the weights are compressed already
        raise ValueError(
            f"{path} is a packed compressed model (spec {state['packed_header']['spec']}) saved from task "
            f"'{saved_task}', which has no {', '.join(flag(k) for k in dropped)}: validate it with --task "
            f"{saved_task} and no compression flags, or pack the checkpoint again with the flags you want"
        )
    raise ValueError(dropped_flags_message(path, saved_task, dropped, arg_overrides))
