"""Is the difference between two sweep results more than the test set's chance? One test per metric.

- bleu: sacrebleu's paired bootstrap resampling (`sacrebleu.significance.PairedTest`, 1,000 resamples, sacrebleu's
  fixed seed: 12345 unless SACREBLEU_SEED says otherwise) on the detokenized hypotheses the sweep kept for each
  config, against its references (the records' `hypotheses` and `references` files). Paired: both systems are
  scored on the same resampled sentences. BLEU is sacrebleu's default (13a tokenization), as fairseq-generate
  --scoring sacrebleu scores.
- accuracy: fairseq-validate gives no per-example predictions, so no paired test is possible: a two-proportion
  z-test (normal approximation) on the two accuracies, each over the `examples` of the subset. It is unpaired: it
  ignores that both models classified the same examples, which, as their errors usually go together, makes it
  conservative (larger p-values than a paired test would give).
- anything else (e.g. masked-LM loss): not tested.

A difference is significant when p < ALPHA. Each config was evaluated once (one checkpoint per size, one seed):
the tests say whether the test set tells the two apart, not whether another training run would.
"""
import math
from dataclasses import dataclass
from pathlib import Path

from . import AnalysisError
from .sweep_results import config_key

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 1000
TESTS = {
    "bleu": f"sacrebleu's paired bootstrap resampling ({BOOTSTRAP_RESAMPLES:,} resamples) on the kept translations",
    "accuracy": "a two-proportion z-test on the accuracies over the dev examples (unpaired: fairseq-validate "
                "gives no per-example predictions)",
}


@dataclass(frozen=True)
class Difference:
    p_value: float  # by the metric's test (TESTS)

    @property
    def significant(self):
        return self.p_value < ALPHA

    def text(self):
        """"p = 0.012", "p < 0.001", or "not significant (p = 0.31)"."""
        p = "p < 0.001" if self.p_value < 0.001 else f"p = {self.p_value:.3f}"
        return p if self.significant else f"not significant ({p})"


def difference_text(difference):
    """A table cell: the difference's text, or "not tested" (no test for the metric, or nothing to test on)."""
    return difference.text() if difference else "not tested"


def read_lines(path):
    """One entry per line, exactly as written (str.splitlines would also split at form feeds and the like)."""
    text = Path(path).read_text(encoding="utf-8")
    return text[:-1].split("\n") if text else []


def paired_bootstrap_p(hypotheses_a, hypotheses_b, references):
    """sacrebleu's paired bootstrap p-value of BLEU(b) against BLEU(a). Identical translations are no difference:
    p = 1 (sacrebleu's test, whose statistic is then 0 in every resample, would report its floor 1/1001)."""
    if hypotheses_a == hypotheses_b:
        return 1.0
    try:
        from sacrebleu.metrics import BLEU
        from sacrebleu.significance import PairedTest
    except ImportError:
        raise AnalysisError("the BLEU significance tests need sacrebleu, which is not installed: pip install "
                            "sacrebleu (or pip install -e '.[significance]')") from None

    test = PairedTest([("a", hypotheses_a), ("b", hypotheses_b)], {"BLEU": BLEU(references=[references])},
                      references=None, test_type="bs", n_samples=BOOTSTRAP_RESAMPLES)
    _, scores = test()
    return float(scores["BLEU"][1].p_value)


def two_proportion_p(percent_a, percent_b, n_a, n_b):
    """Two-sided p-value of the difference of two proportions (given in percent, as fairseq logs accuracy) over
    n_a and n_b examples, under the pooled normal approximation."""
    a, b = percent_a / 100, percent_b / 100
    pooled = (a * n_a + b * n_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:  # both 0% or both 100%
        return 1.0
    return math.erfc(abs(a - b) / spread / math.sqrt(2))


class SignificanceTests:
    """The tests for the records of one sweep file, whose folder their file paths are relative to."""

    def __init__(self, sweep_file):
        self.sweep_file = Path(sweep_file)
        self._lines = {}
        self._differences = {}  # a report compares the same two configs in several places

    def lines(self, record, field):
        path = self.sweep_file.parent / record[field]
        if path not in self._lines:
            if not path.is_file():
                raise AnalysisError(f"{self.sweep_file}: the {field} of {record['model']} ({record[field]}) are "
                                    f"not there: keep the sweep's hyps/ folder beside it")
            self._lines[path] = read_lines(path)
        return self._lines[path]

    def compare(self, a, b):
        """The Difference between records a and b, or None where the metric has no test or a record lacks what
        its test needs (a sweep from before the hypotheses were kept)."""
        pair = tuple((config_key(r), r.get("hypotheses"), r.get("references")) for r in (a, b))
        if pair not in self._differences:
            self._differences[pair] = self._test(a, b)
        return self._differences[pair]

    def _test(self, a, b):
        metric = a["metric"]
        if metric == "bleu" and all("hypotheses" in r and "references" in r for r in (a, b)):
            references = self.lines(a, "references")
            if self.lines(b, "references") != references:
                raise AnalysisError(f"{self.sweep_file}: {a['model']} and {b['model']} were scored against different "
                                    f"references ({a['references']}, {b['references']}): not comparable")
            hypotheses = [self.lines(r, "hypotheses") for r in (a, b)]
            for record, lines in zip((a, b), hypotheses):
                if len(lines) != len(references):
                    raise AnalysisError(f"{self.sweep_file}: {record['hypotheses']} holds {len(lines)} hypotheses "
                                        f"for {len(references)} references")
            return Difference(paired_bootstrap_p(*hypotheses, references))
        if metric == "accuracy" and all("examples" in r for r in (a, b)):
            return Difference(two_proportion_p(a["value"], b["value"], a["examples"], b["examples"]))
        return None
