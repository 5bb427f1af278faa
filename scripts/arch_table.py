#!/usr/bin/env python
"""Print the model-size grid: shape, exact parameter count, training FLOPs per token and weight memory.

    python scripts/arch_table.py [--filter 'roberta_d1*'] [--vocab-size N] [--seq-len N] [--format md|csv|json]

The rows and the formulas: fairseq_ext/models/arch_description.py, as follows.
"""

import argparse
import sys

from fairseq_ext.models import arch_description
from fairseq_ext.models.arch_description import FORMATS, GRID_ARCHS, describe, format_table, matching_archs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__ + "\n" + arch_description.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filter", help="glob on the whole name (e.g. 'roberta_d1*'), else regex (e.g. '_h(256|512)$')")
    parser.add_argument("--vocab-size", type=int, help="dictionary size incl. specials (default: roberta 50265, MT 32000)")
    parser.add_argument(
        "--seq-len", type=int, help="n of the FLOPs' attention term; roberta: also --tokens-per-sample (default 512, MT 32)"
    )
    parser.add_argument("--format", choices=FORMATS, default="md")
    args = parser.parse_args(argv)

    archs = matching_archs(args.filter)
    if not archs:
        parser.error(f"--filter {args.filter!r} matches none of the {len(GRID_ARCHS)} grid archs")
    sys.stdout.write(format_table([describe(arch, args.vocab_size, args.seq_len) for arch in archs], args.format))


if __name__ == "__main__":
    main()
