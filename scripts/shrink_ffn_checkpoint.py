#!/usr/bin/env python
"""Remove FFN neurons from a fairseq checkpoint for good: a smaller, ordinary checkpoint to decode or fine-tune.

    python scripts/shrink_ffn_checkpoint.py CK.pt --prune-ffn 0.5 --out small.pt
    fairseq-generate DATA --path small.pt ...                       # stock fairseq, no flag: the shrunk model
    fairseq-train DATA --finetune-from-model small.pt --arch ARCH \\
        --encoder-ffn-embed-dim K --decoder-ffn-embed-dim K ...     # recover what pruning cost (K: printed)

The neurons removed are those --prune-ffn removes at evaluation time (lowest L2 norm of fc1 row + bias + fc2
column, fairseq_ext.compression.structured), so `fairseq-generate --path small.pt` decodes exactly what
`--task compressed_translation --prune-ffn F --path CK.pt` decodes. Every layer keeps the same number of neurons,
so the result is a standard model of the same arch with a smaller --{encoder,decoder}-ffn-embed-dim, written into
the checkpoint's config; fine-tune it with the original training's model options (fairseq-train builds the model
from its command line, so e.g. --encoder-normalize-before must be given again) plus those sizes. Attention heads
cannot be removed this way: fairseq's MultiheadAttention ties the head count to the model width (use
--prune-heads at evaluation time).
The optimizer state is dropped (its shapes are the old ones); the update count is kept.
--data points at the binarized data folder (for its dictionaries) when it moved since training.
"""
import argparse
import sys
from argparse import Namespace
from pathlib import Path

import fairseq_ext.plugin  # noqa: F401  (registers the tasks, safe checkpoint loading)
from fairseq import checkpoint_utils
from omegaconf import OmegaConf, open_dict

from fairseq_ext.compression.structured import check_fraction, prune_ffn_neurons
from fairseq_ext.tasks.model_from_checkpoint import load_model

# The config keys holding each side's FFN width: transformer (both sides) and roberta (encoder only).
FFN_KEYS = {"encoder": "encoder_ffn_embed_dim", "decoder": "decoder_ffn_embed_dim"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a fairseq checkpoint (.pt)")
    parser.add_argument("--prune-ffn", required=True, help="fraction of the FFN neurons of every layer to remove, "
                                                           "in (0, 1)")
    parser.add_argument("--out", type=Path, required=True, help="the shrunk checkpoint to write")
    parser.add_argument("--data", help="binarized data folder with the dictionaries (default: the one saved in the "
                                       "checkpoint)")
    args = parser.parse_args(argv)
    problems = []
    if not args.checkpoint.is_file():
        problems.append(f"{args.checkpoint}: no such checkpoint")
    try:
        args.prune_ffn = check_fraction(args.prune_ffn, "--prune-ffn")
        if args.prune_ffn == 0:
            problems.append("--prune-ffn 0 removes nothing: give a fraction in (0, 1)")
    except ValueError as error:
        problems.append(str(error))
    if args.data is not None and not Path(args.data).is_dir():
        problems.append(f"--data {args.data}: no such folder")
    if args.out.resolve() == args.checkpoint.resolve():
        problems.append(f"--out {args.out}: would overwrite the checkpoint it reads")
    if problems:
        parser.error("; ".join(problems))
    return args


def kept_widths(report):
    """{config key: FFN width kept} per side; every layer of a side keeps the same number of neurons."""
    widths = {}
    for side, key in FFN_KEYS.items():
        kept = {after for name, (_, after) in report.items() if name.split(".")[0] == side}
        if len(kept) > 1:
            raise ValueError(f"the {side} layers kept different FFN widths {sorted(kept)}: not one arch config")
        if kept:
            widths[key] = kept.pop()
    return widths


def set_widths(cfg, widths):
    """Write the kept widths into the model config: an argparse Namespace for fairseq's legacy archs (transformer,
    roberta), else a DictConfig."""
    model_cfg = cfg.model
    missing = [key for key in widths if not (hasattr(model_cfg, key) if isinstance(model_cfg, Namespace)
                                             else key in model_cfg)]
    if missing:
        sys.exit(f"shrink: error: the checkpoint's model config has no {', '.join(missing)}: not a transformer or "
                 "roberta checkpoint")
    if isinstance(model_cfg, Namespace):
        for key, width in widths.items():
            setattr(model_cfg, key, width)
        return
    with open_dict(model_cfg):
        for key, width in widths.items():
            model_cfg[key] = width


def main(argv=None):
    args = parse_args(argv)
    state, model, _ = load_model(args.checkpoint, args.data)  # any compression flags saved with the task: off
    before = sum(p.numel() for p in model.parameters())
    report = prune_ffn_neurons(model, args.prune_ffn)
    widths = kept_widths(report)
    cfg = state["cfg"]
    set_widths(cfg, widths)
    state["model"] = model.state_dict()
    state["cfg"] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # plain data: loads weights_only
    state.pop("last_optimizer_state", None)
    state["extra_state"] = {**(state.get("extra_state") or {}), "shrunk_from": str(args.checkpoint),
                            "prune_ffn": args.prune_ffn}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint_utils.torch_persistent_save(state, str(args.out))
    after = sum(p.numel() for p in model.parameters())
    print(f"shrink: {len(report)} FFN blocks, {before:,} -> {after:,} parameters; wrote {args.out}")
    flags = " ".join(f"--{key.replace('_', '-')} {width}" for key, width in widths.items())
    print(f"shrink: to fine-tune it, the original training's model options plus: --finetune-from-model {args.out} "
          f"{flags}")


if __name__ == "__main__":
    main()
