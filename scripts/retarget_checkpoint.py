#!/usr/bin/env python
"""Point a checkpoint's saved task at its compressed variant, so fairseq-validate accepts compression flags.

    python scripts/retarget_checkpoint.py CK.pt --out CK.compressed.pt
    fairseq-validate DATA --user-dir fairseq_ext --task compressed_translation --path CK.compressed.pt \
        --prune-sparsity 0.6 --quant-bits 4 ...

fairseq-validate takes the task from the checkpoint and applies command-line values only to keys its saved config
has; a checkpoint trained by the stock task (translation, masked_lm, sentence_prediction) has no compression keys.
This rewrites the saved task name to compressed_<task> and adds the compression keys at their defaults (off).
Weights, optimizer state and everything else are copied unchanged; the result still loads in plain fairseq
with --user-dir fairseq_ext.
"""
import argparse
import os
from pathlib import Path

import torch

import fairseq_ext.plugin  # noqa: F401  (registers the tasks, safe checkpoint loading)
from fairseq_ext.tasks.compressed_tasks import COMPRESSED_VARIANT_OF
from fairseq_ext.tasks.compression_config import DEFAULTS


class RetargetError(Exception):
    pass


def compressed_name(saved_task):
    if saved_task in COMPRESSED_VARIANT_OF:
        return saved_task
    if saved_task in COMPRESSED_VARIANT_OF.values():
        return f"compressed_{saved_task}"
    raise RetargetError(f"the checkpoint was saved by task '{saved_task}'; compressed variants exist for "
                        f"{', '.join(sorted(COMPRESSED_VARIANT_OF.values()))}")


def retarget(state):
    """Edit the checkpoint dict in place; returns (old task name, new task name)."""
    defaults = {name: str(v) if hasattr(v, "value") else v for name, v in DEFAULTS.items()}
    if state.get("cfg") is not None:  # what fairseq writes: cfg as plain containers
        task = state["cfg"]["task"]
        old = task.get("_name")
        task["_name"] = compressed_name(old)
        for name, default in defaults.items():
            task.setdefault(name, default)
    elif state.get("args") is not None:  # legacy: an argparse Namespace
        old = state["args"].task
        state["args"].task = compressed_name(old)
        for name, default in defaults.items():
            if not hasattr(state["args"], name):
                setattr(state["args"], name, default)
    else:
        raise RetargetError("the checkpoint has neither 'cfg' nor 'args': not a fairseq checkpoint")
    return old, (state["cfg"]["task"]["_name"] if state.get("cfg") is not None else state["args"].task)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="where to write the retargeted checkpoint")
    args = parser.parse_args(argv)
    if args.out.resolve() == args.checkpoint.resolve():
        parser.error("--out must differ from the input checkpoint (keep the original)")
    state = torch.load(args.checkpoint, map_location="cpu")  # safe loading, with the plugin's allowlist
    try:
        old, new = retarget(state)
    except RetargetError as problem:
        parser.error(str(problem))
    tmp = args.out.with_name(args.out.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, args.out)  # never a half-written checkpoint under the final name
    print(f"wrote {args.out}: task {old} -> {new}")


if __name__ == "__main__":
    main()
