#!/usr/bin/env python
"""Write the packed compressed file of a fairseq checkpoint: exactly the accounted bytes, no pickle.

    python scripts/pack_checkpoint.py CK.pt --out model.fxc --prune-sparsity 0.6 --quant-bits 4
    fairseq-generate DATA --user-dir fairseq_ext --task translation --path model.fxc ...   # decodes the packed model

The compression flags are those of the compressed_* tasks (fairseq-generate/-validate). The file's metadata keeps
the checkpoint's fairseq config (so fairseq rebuilds the model from the file alone) and its update count.
--data points at the binarized data folder (for its dictionaries) when it moved since training. The calibrated
methods (--prune-method wanda|sparsegpt, --quant-method gptq) calibrate here, once, on --calib-samples samples of
the checkpoint task's --calib-subset; decoding the packed file later needs no calibration.
"""
import argparse
import json
from pathlib import Path

import fairseq_ext.plugin  # noqa: F401  (registers the tasks, safe checkpoint loading)
from fairseq.dataclass.utils import gen_parser_from_dataclass
from omegaconf import OmegaConf, open_dict

from fairseq_ext.checkpoint_loading import config_to_json
from fairseq_ext.compression import save_compressed
from fairseq_ext.tasks.calibration import compress_with_calibration
from fairseq_ext.tasks.compression import compressed_line_figures
from fairseq_ext.tasks.compression_checks import check_compression_config, check_finite_weights
from fairseq_ext.tasks.compression_config import COMPRESSION_FIELDS, CompressionConfig, compression_on, compression_spec
from fairseq_ext.tasks.model_from_checkpoint import load_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a fairseq checkpoint (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="the packed file to write (e.g. model.fxc)")
    parser.add_argument("--data", help="binarized data folder with the dictionaries (default: the one saved in the "
                                       "checkpoint)")
    gen_parser_from_dataclass(parser, CompressionConfig())
    args = parser.parse_args(argv)
    try:
        check_compression_config(args)
    except ValueError as problems:
        parser.error(str(problems))
    if not compression_on(args):
        parser.error("nothing to compress: give --prune-sparsity F (0 < F < 1) and/or --quant-bits 2..8")
    return args


# A packed file's weights are compressed already: the task flags saved with it re-derive exactly its masks and grids
# (the calibrated methods' masks hold exactly each layer's pruned count), so loading it never calibrates again.
RELOAD_WITHOUT_CALIBRATION = {"prune_method": "magnitude", "prune_pattern": "unstructured", "prune_scope": "layer",
                              "quant_method": "rtn"}


def main(argv=None):
    args = parse_args(argv)
    flags = {name: getattr(args, name) for name in COMPRESSION_FIELDS}
    spec = compression_spec(args)
    calibration = masks = None
    if spec.calibrated:  # loaded uncompressed, then calibrated here on the checkpoint's task and data
        state, model, task = load_model(args.checkpoint, args.data)
        check_finite_weights(model)
        _, masks, calibration = compress_with_calibration(task, model, spec, args)
        with open_dict(state["cfg"].task):
            for name, saved in {**flags, **RELOAD_WITHOUT_CALIBRATION}.items():
                if name in state["cfg"].task:
                    state["cfg"].task[name] = saved
    else:
        state, model, _ = load_model(args.checkpoint, args.data, flags)
    cfg = state["cfg"]
    num_updates = (state.get("optimizer_history") or [{}])[-1].get("num_updates", 0)
    metadata = {
        "cfg": config_to_json(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)),
        "num_updates": num_updates,
        "source": str(args.checkpoint),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = save_compressed(args.out, model, spec, masks=masks, metadata=metadata)
    print(report.table())
    print(f"compressed {json.dumps(compressed_line_figures(report, model, spec, calibration))}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.3f} MB on disk)")


if __name__ == "__main__":
    main()
