"""fairseq-train on a CUDA GPU with bf16 and torch's fused AdamW: the two fairseq patches of the GPU benchmark.

scripts/bench_train.py --device cuda runs fairseq-train through ``run_fairseq_train`` for both of its arms, the grid
arch (``--user-dir fairseq_ext``) and stock fairseq (no --user-dir). This module imports no fairseq at import time
and registers nothing, so the stock arm stays fairseq alone; the plugin (fairseq_ext.plugin) is loaded only when
the command line asks for it.
"""
import sys


def torch_fused_adamw():
    """A class fairseq's FairseqAdam accepts as its 'fused Adam': torch.optim.AdamW(fused=True).

    FairseqAdam calls ``cls(params, use_fp16_stats=..., lr=, betas=, eps=, weight_decay=)``; fairseq's own Adam
    decays weights the AdamW way (decoupled), so AdamW is the same update. It steps fp32 master weights, which
    may be one flat tensor (--fp16) or one per parameter (--bf16).
    """
    import torch

    class TorchFusedAdamW(torch.optim.AdamW):
        supports_memory_efficient_fp16 = False  # fp32 master weights only
        supports_flat_params = True
        supports_step_with_scale = False

        def __init__(self, params, use_fp16_stats=False, **config):
            if use_fp16_stats:
                raise ValueError("--fp16-adam-stats needs apex's FusedAdamV1; drop it or pass --no-fused-adam")
            super().__init__(params, fused=True, **config)

    return TorchFusedAdamW


def bf16_on_cuda(parse_args_and_arch):
    """fairseq's option parsing with its ``--bf16 implies --tpu`` lifted (unless --tpu is given).

    fairseq (options.parse_args_and_arch) sets tpu=True whenever bf16 is on, so stock fairseq-train --bf16 on a
    CUDA GPU dies looking for torch_xla. Its bf16 training itself (bf16 model, fp32 master weights in
    FP16Optimizer, no loss scaling) does not depend on the TPU: with tpu off it runs on the GPU.
    """

    def parse(parser, input_args=None, **kwargs):
        args = parse_args_and_arch(parser, input_args, **kwargs)
        given = sys.argv[1:] if input_args is None else input_args
        if getattr(args, "bf16", False) and "--tpu" not in given:
            args.tpu = False
        return args

    return parse


def run_fairseq_train(argv, fused_adam):
    """fairseq-train ``argv`` in this process, with bf16 on CUDA and, if ``fused_adam``, torch's fused AdamW."""
    from fairseq_cli.train import cli_main  # first: it sets up fairseq's log format before fairseq is imported
    import fairseq.optim.adam
    import fairseq.options

    if "--user-dir" in argv:
        # fairseq skips a --user-dir whose package is imported already, as fairseq_ext is (this module is in it).
        import fairseq_ext.plugin  # noqa: F401
    fairseq.options.parse_args_and_arch = bf16_on_cuda(fairseq.options.parse_args_and_arch)
    if fused_adam:
        fused = torch_fused_adamw()
        fairseq.optim.adam.get_fused_adam_class = lambda: fused  # looked up by FairseqAdam.__init__ (CUDA only)
    sys.argv = ["fairseq-train", *argv]
    cli_main()
