"""Analysis of training logs and compression sweeps: convergence, the compression frontier, selection, report.

Plain python (matplotlib optional, for the PNGs only): no fairseq or torch import anywhere in this package, so
the analysis runs wherever the logs and sweep results are copied, and scripts/analyze.py starts in a second.
"""


class AnalysisError(Exception):
    """Bad input (a missing file, a malformed log line, an unknown metric): one line that names the culprit."""
