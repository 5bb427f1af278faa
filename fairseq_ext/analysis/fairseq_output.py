"""The one reader of fairseq's output: train logs, fairseq-generate and fairseq-validate output, parameter counts.

Used by the analysis, the recipes (recipes/lib/train_budget.py) and the benchmarks, so that every number taken
from fairseq is read, and words/s defined, one way.

JSON records (`--log-format json`) come in two forms, because users have both: bare JSON messages (the file
fairseq-train writes with `--log-file`) and tagged lines (`2026-11-26 17:27:53 | INFO | train_inner | {...}`, the
console). The compressed tasks log one line whose message is `compressed {json}` with sparsity, bits,
compressed_mb, fp32_mb, ratio and params (a calibrated compression adds prune_method, quant_method, "none" for a
compression not applied, and calibration: subset, samples, seconds, ...), in whichever logging format the tool set
up: `... | INFO | fairseq_ext.tasks.compression | compressed {...}` or
`INFO:fairseq_ext.tasks.compression:compressed {...}`.
Without --quiet, fairseq-generate prints each sentence's reference (`T-<id>\t<text>`) and detokenized hypotheses
(`D-<id>\t<score>\t<text>`, best first).
"""
import json
import re
import statistics
import struct

from . import AnalysisError
from .sweep_results import COMPRESSOR_DEFAULTS, FULL_PRECISION_BITS, compressors, is_calibrated

BLEU_LINE = re.compile(r"Generate \S+ with beam=\d+: BLEU = ([\d.]+)")
COMPRESSED_LINE = re.compile(r"(?:^|\| |:)compressed (\{.*\})\s*$")
COMPRESSED_KEYS = ("sparsity", "bits", "compressed_mb", "fp32_mb", "params")
TRANSLATED_LINE = re.compile(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s "
                             r"\(([\d.]+) sentences/s, ([\d.]+) tokens/s\)")
PARAMS_LINE = re.compile(r"num\. (?:shared )?model params: ([\d,]+)")
SENTENCE_LINE = re.compile(r"([TD])-(\d+)\t(.*)")
MMAP_INDEX_MAGIC = b"MMIDIDX\x00\x00"  # fairseq's binarized datasets (--dataset-impl mmap, the default)


def json_message(line):
    """The JSON object a log line carries, as text; None for any other line (fairseq also logs plain text)."""
    start = line.find("{")
    line = line.rstrip()
    if start < 0 or not line.endswith("}") or (start > 0 and not line[:start].rstrip().endswith("|")):
        return None
    text = line[start:]
    try:
        return text if isinstance(json.loads(text), dict) else None
    except json.JSONDecodeError:  # e.g. the config dump, a python dict repr
        return None


def json_records(lines):
    """The JSON records of a fairseq log, each once, in order.

    Each epoch's progress bar adds one more handler to the --log-file logger, so epoch N's records are written N
    times: an exact repeat is the same record again.
    """
    seen = set()
    for line in lines:
        text = json_message(line)
        if text is None or text in seen:
            continue
        seen.add(text)
        yield json.loads(text)


def words_per_s(train_inner):
    """The training speed, one definition everywhere: the median of fairseq's `wps` (target words per second of
    each --log-interval) over the train_inner records after the first, whose interval holds the start-up (the
    first record alone if it is the only one). fairseq logs 0 where it had a single update to time: no measurement.
    None when nothing was measured."""
    steady = train_inner[1:] if len(train_inner) > 1 else train_inner
    rates = [float(r["wps"]) for r in steady if r.get("wps") is not None and float(r["wps"]) > 0]
    return statistics.median(rates) if rates else None


def model_params(output):
    """The parameter count fairseq-train prints (`num. shared model params: 5,665,792`), the last one; or None."""
    counts = PARAMS_LINE.findall(output)
    return int(counts[-1].replace(",", "")) if counts else None


def translated(output):
    """(sentences, tokens, seconds, sentences/s, tokens/s) of fairseq-generate's last `Translated ...` line."""
    lines = TRANSLATED_LINE.findall(output)
    if not lines:
        raise AnalysisError("no 'Translated N sentences ... tokens/s' line in the fairseq-generate output")
    sentences, tokens, seconds, sentences_per_s, tokens_per_s = lines[-1]
    return (int(sentences.replace(",", "")), int(tokens.replace(",", "")), float(seconds), float(sentences_per_s),
            float(tokens_per_s))


def sacrebleu_score(output):
    """The corpus BLEU of fairseq-generate --scoring sacrebleu (the last one, should several be printed)."""
    scores = BLEU_LINE.findall(output)
    if not scores:
        raise AnalysisError("no 'Generate ... BLEU = ' line in the fairseq-generate output")
    return float(scores[-1])


def generation_speed(output):
    """(tokens_per_s, latency_ms) of fairseq-generate's `Translated N sentences (T tokens) in S s (x sentences/s,
    y tokens/s)` line: decoding time only (no start-up, no checkpoint loading); latency is ms per sentence."""
    *_, sentences_per_s, tokens_per_s = translated(output)
    if sentences_per_s <= 0:
        raise AnalysisError("fairseq-generate translated no sentence")
    return tokens_per_s, 1000.0 / sentences_per_s


def translations(output):
    """(hypotheses, references) of fairseq-generate's output, in sentence id order: each sentence's best
    detokenized hypothesis (its first D- line) and its reference (T- line). Needs the output without --quiet."""
    hypotheses, references = {}, {}
    for line in output.split("\n"):
        match = SENTENCE_LINE.fullmatch(line)
        if not match:
            continue
        kind, sentence, text = match.group(1), int(match.group(2)), match.group(3)
        if kind == "T":
            references[sentence] = text
        else:
            hypotheses.setdefault(sentence, text.split("\t", 1)[1] if "\t" in text else "")
    if not hypotheses:
        raise AnalysisError("no 'D-<id>' hypothesis lines in the fairseq-generate output (--quiet hides them)")
    if sorted(hypotheses) != sorted(references):
        raise AnalysisError(f"fairseq-generate printed {len(hypotheses)} hypotheses (D- lines) for "
                            f"{len(references)} references (T- lines)")
    order = sorted(hypotheses)
    return [hypotheses[i] for i in order], [references[i] for i in order]


def dataset_length(index_file):
    """How many examples a binarized dataset holds, from the header of its .idx file (magic, version, dtype code,
    length)."""
    with open(index_file, "rb") as f:
        header = f.read(len(MMAP_INDEX_MAGIC) + 8 + 1 + 8)
    if len(header) < len(MMAP_INDEX_MAGIC) + 17 or not header.startswith(MMAP_INDEX_MAGIC):
        raise AnalysisError(f"{index_file}: not a fairseq binarized index (fairseq-preprocess --dataset-impl mmap)")
    return struct.unpack("<Q", header[-8:])[0]


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


def all_compressed_figures(output):
    """Every `compressed {json}` record of the output, in order, each checked for the keys the sweep reads."""
    found = [json.loads(match.group(1)) for match in map(COMPRESSED_LINE.search, output.splitlines()) if match]
    for figures in found:
        missing = [key for key in COMPRESSED_KEYS if key not in figures]
        if missing:
            raise AnalysisError(f"the 'compressed' line lacks {', '.join(missing)}: {figures}")
    return found


def compressed_figures(output):
    """The last `compressed {json}` record of the output, or None when the tool printed none."""
    found = all_compressed_figures(output)
    return found[-1] if found else None


def calibration_fields(figures, config, calib_samples):
    """A sweep record's calibration fields from a `compressed {json}` record of a config: the samples the tool
    says it calibrated on (else calib_samples, those asked for) and the seconds it took, where it logs them; none
    for a config that does not calibrate. Checks that the tool ran the compressors the config asked for, where it
    names them."""
    applied = {"prune_method": config["sparsity"] > 0, "quant_method": config["bits"] < FULL_PRECISION_BITS}
    for name, asked in zip(COMPRESSOR_DEFAULTS, compressors(config)):
        ran = figures.get(name, asked)
        if applied[name] and ran != asked:
            raise AnalysisError(f"asked for {name.replace('_', '-')} {asked}, the tool reports {ran}")
    if not is_calibrated(config):
        return {}
    logged = figures.get("calibration") or {}
    fields = {"calibration_samples": int(logged.get("samples", calib_samples))}
    if "seconds" in logged:
        fields["calibration_seconds"] = round(float(logged["seconds"]), 2)
    return fields
