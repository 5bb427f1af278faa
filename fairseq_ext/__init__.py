"""fairseq_ext: ``--user-dir fairseq_ext`` (or ``import fairseq_ext.plugin``) registers it with fairseq.

The compression core and the analysis need no fairseq: importing them must not import it, so fairseq is
registered with only where it is loaded already (fairseq's --user-dir, or a program that imported it first).
"""
import sys

if sys.modules.get("fairseq") is not None:  # None: a program that blocks the import of fairseq
    from fairseq_ext import plugin  # noqa: F401
