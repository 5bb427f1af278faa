"""fairseq checkpoints load under torch >= 2.6, whose torch.load defaults to weights_only=True.

We keep safe loading on: the weights-only unpickler rebuilds tensors and plain containers, plus the few types
allowlisted here, which are exactly what fairseq and this plugin write into a checkpoint. Anything else (a
class, a function call) is refused. Users who trust an older file that needs more opt in explicitly with torch's
own switch, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, for that command only.
"""
import argparse

import torch

# fairseq stores the legacy `args` (and Namespace-valued config entries) as argparse.Namespace.
CHECKPOINT_SAFE_GLOBALS = [argparse.Namespace]

torch.serialization.add_safe_globals(CHECKPOINT_SAFE_GLOBALS)
