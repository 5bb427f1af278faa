"""What the sweep reads from fairseq-generate and fairseq-validate output: the metric and the `compressed` line.

The compressed tasks log one line whose message is `compressed {json}` with sparsity, bits, compressed_mb,
fp32_mb, ratio and params, in whichever logging format the tool set up: `2026-11-26 17:27:53 | INFO |
fairseq_ext.tasks.compression | compressed {...}` or `INFO:fairseq_ext.tasks.compression:compressed {...}`.
"""
import json
import re

from . import AnalysisError

BLEU_LINE = re.compile(r"Generate \S+ with beam=\d+: BLEU = ([\d.]+)")
COMPRESSED_LINE = re.compile(r"(?:^|\| |:)compressed (\{.*\})\s*$")
COMPRESSED_KEYS = ("sparsity", "bits", "compressed_mb", "fp32_mb", "params")
SPEED_LINE = re.compile(r"Translated [\d,]+ sentences \([\d,]+ tokens\) in [\d.]+s \(([\d.]+) sentences/s, ([\d.]+) tokens/s\)")


def sacrebleu_score(output):
    """The corpus BLEU of fairseq-generate --scoring sacrebleu (the last one, should several be printed)."""
    scores = BLEU_LINE.findall(output)
    if not scores:
        raise AnalysisError("no 'Generate ... BLEU = ' line in the fairseq-generate output")
    return float(scores[-1])


def generation_speed(output):
    """(tokens_per_s, latency_ms) of fairseq-generate's `Translated N sentences (T tokens) in S s (x sentences/s,
    y tokens/s)` line: decoding time only (no start-up, no checkpoint loading); latency is ms per sentence."""
    speeds = SPEED_LINE.findall(output)
    if not speeds:
        raise AnalysisError("no 'Translated N sentences ... tokens/s' line in the fairseq-generate output")
    sentences_per_s, tokens_per_s = map(float, speeds[-1])
    if sentences_per_s <= 0:
        raise AnalysisError("fairseq-generate translated no sentence")
    return tokens_per_s, 1000.0 / sentences_per_s


def validation_metric(output, subset, metric):
    """A metric of fairseq-validate --log-format json, e.g. ("valid", "loss") from `| valid | {"valid_loss": ..}`."""
    key = f"{subset}_{metric}"
    for line in reversed(output.splitlines()):
        match = re.search(rf"\| {re.escape(subset)} \| (\{{.*\}})\s*$", line)
        if match:
            record = json.loads(match.group(1))
            if key not in record:
                raise AnalysisError(f"fairseq-validate logged no {key} (it logged {', '.join(record)})")
            return float(record[key])
    raise AnalysisError(f"no '| {subset} | {{...}}' record in the fairseq-validate output (--log-format json?)")


def compressed_summary(output):
    """The last `compressed {json}` record of the output, or None when the tool printed none."""
    found = None
    for line in output.splitlines():
        match = COMPRESSED_LINE.search(line)
        if match:
            found = json.loads(match.group(1))
    if found is not None:
        missing = [key for key in COMPRESSED_KEYS if key not in found]
        if missing:
            raise AnalysisError(f"the 'compressed' line lacks {', '.join(missing)}: {found}")
    return found
