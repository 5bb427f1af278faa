#!/usr/bin/env python
"""Prepare a GLUE classification task for RoBERTa fine-tuning (fairseq --task sentence_prediction), encoded with
the pretraining's sentencepiece model and dictionary.

    python scripts/prepare_glue.py --task SST-2 --from ../shared/data/sst2 --spm MONO/spm.model \\
        --dict MONO/bin/dict.txt --out runs/roberta/glue/SST-2
    python scripts/prepare_glue.py --task MNLI --from glue_data/MNLI --spm ... --dict ... --out .../MNLI

--from holds the task's GLUE files (train.tsv and dev.tsv, MNLI: dev_matched.tsv), with their header row. SST-2 is
also read in the header-less "sentence<TAB>label" form (as in clairett/pytorch-sentiment-classification, which is
downloaded when --from is not given). Writes under --out: bpe/, and bin/{input0,input1,label}/ as fairseq's
sentence_prediction task reads them (input1 only for sentence-pair tasks). The dev set becomes the "valid" split.
--max-examples N keeps the first N examples of each split (smoke tests). A finished run is not redone.
"""
import argparse
import csv
import os
import shutil
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_multi30k import PrepareError, fairseq_preprocess, sha256  # noqa: E402

# task -> (text columns, label column, dev file name): the GLUE tsv headers.
TASKS = {
    "SST-2": (["sentence"], "label", "dev.tsv"),
    "MNLI": (["sentence1", "sentence2"], "gold_label", "dev_matched.tsv"),
    "QNLI": (["question", "sentence"], "label", "dev.tsv"),
    "RTE": (["sentence1", "sentence2"], "label", "dev.tsv"),
    "MRPC": (["#1 String", "#2 String"], "Quality", "dev.tsv"),
    "QQP": (["question1", "question2"], "is_duplicate", "dev.tsv"),
}
SST2_MIRROR = "https://raw.githubusercontent.com/clairett/pytorch-sentiment-classification/master/data/SST2"
SST2_SHA256 = {
    "train.tsv": "ec192f833a64da08f475488a77b0d0b47db47acd0f458bd18433fc793b569920",
    "dev.tsv": "eddea6b39e601dd4e7a672b53cc40fdf6019fa80522f351206c24340ca5d9359",
}


def download_sst2(raw, mirror):
    raw.mkdir(parents=True, exist_ok=True)
    for name, expected in SST2_SHA256.items():
        path = raw / name
        if path.is_file() and sha256(path) == expected:
            continue
        url = f"{mirror.rstrip('/')}/{name}"
        print(f"prepare: downloading {url}", flush=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(f"{path}.tmp", "wb") as f:
                shutil.copyfileobj(response, f)
        except OSError as e:
            raise PrepareError(f"cannot download {url} ({e}); give the SST-2 files with --from DIR") from None
        if sha256(f"{path}.tmp") != expected:
            raise PrepareError(f"{url}: sha256 mismatch (corrupt download?); retry, or give --from DIR")
        os.replace(f"{path}.tmp", path)
    return raw


def read_examples(path, task):
    """[(texts, label)] of a GLUE tsv (quotes are text in GLUE files, not CSV quoting)."""
    columns, label_column, _ = TASKS[task]
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise PrepareError(f"{path}: empty")
    header, rows = rows[0], rows[1:]
    if task == "SST-2" and header != ["sentence", "label"]:
        header, rows = ["sentence", "label"], [header] + rows  # the header-less form: the first row is data
    missing = [c for c in columns + [label_column] if c not in header]
    if missing:
        raise PrepareError(f"{path}: no column {', '.join(missing)} in its header (is it {task}'s GLUE file?)")
    index = [header.index(c) for c in columns + [label_column]]
    examples = []
    for number, row in enumerate(rows, start=2):
        if len(row) <= max(index):
            raise PrepareError(f"{path}:{number}: {len(row)} columns, expected at least {max(index) + 1}")
        values = [row[i].strip() for i in index]
        examples.append((values[:-1], values[-1]))
    return examples


def write_split(examples, spm_model, bpe_dir, split):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    inputs = len(examples[0][0])
    for i in range(inputs):
        pieces = sp.encode([texts[i] for texts, _ in examples], out_type=str)
        (bpe_dir / f"{split}.input{i}").write_text("".join(" ".join(p) + "\n" for p in pieces), encoding="utf-8")
    (bpe_dir / f"{split}.label").write_text("".join(label + "\n" for _, label in examples), encoding="utf-8")
    return inputs


def binarize(bpe_dir, bin_dir, dictionary, inputs, workers):
    tmp = bin_dir.with_name(bin_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fields = [(f"input{i}", ["--srcdict", dictionary]) for i in range(inputs)] + [("label", [])]
    for field, dict_args in fields:
        fairseq_preprocess("--only-source", "--trainpref", bpe_dir / f"train.{field}", "--validpref",
                           bpe_dir / f"valid.{field}", "--destdir", tmp / field, "--workers", workers, *dict_args)
    os.replace(tmp, bin_dir)


def prepare(task, out, spm_model, dictionary, source=None, workers=2, mirror=SST2_MIRROR, max_examples=0):
    out = Path(out)
    bin_dir = out / "bin"
    if (bin_dir / "label" / "dict.txt").is_file():
        print(f"prepare: {bin_dir} exists, skipping")
        return bin_dir
    source = Path(source) if source else download_sst2(out / "raw", mirror)
    dev_name = TASKS[task][2]
    missing = [n for n in ("train.tsv", dev_name) if not (source / n).is_file()]
    if missing:
        raise PrepareError(f"--from {source}: missing {', '.join(missing)} (the GLUE {task} files)")
    bpe_dir = out / "bpe"
    bpe_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, name in (("train", "train.tsv"), ("valid", dev_name)):
        examples = read_examples(source / name, task)[: max_examples or None]
        if not examples:
            raise PrepareError(f"{source / name}: no examples")
        inputs = write_split(examples, spm_model, bpe_dir, split)
        counts[split] = len(examples)
    binarize(bpe_dir, bin_dir, dictionary, inputs, workers)
    # fairseq-preprocess pads a dictionary with madeupwordNNNN entries: they are no classes.
    labels = [line for line in (bin_dir / "label" / "dict.txt").read_text(encoding="utf-8").splitlines()
              if not line.startswith("madeupword")]
    print(f"prepare: {task}: {counts['train']:,} training and {counts['valid']:,} dev examples, {len(labels)} classes, "
          f"wrote {bin_dir}")
    return bin_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=TASKS, help="the GLUE task")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--from", dest="source", help="the task's folder of GLUE tsv files (default, SST-2 only: "
                        "download the sentence<TAB>label files)")
    parser.add_argument("--spm", required=True, help="the pretraining's sentencepiece model")
    parser.add_argument("--dict", required=True, help="the pretraining's dictionary (its bin/dict.txt)")
    parser.add_argument("--max-examples", type=int, default=0,
                        help="keep only the first N examples of each split (default 0: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mirror", default=SST2_MIRROR, help=f"base URL of SST-2 (default {SST2_MIRROR})")
    args = parser.parse_args(argv)
    problems = [f"--{name} {value}: no such file" for name, value in (("spm", args.spm), ("dict", args.dict))
                if not Path(value).is_file()]
    if args.source is not None and not Path(args.source).is_dir():
        problems.append(f"--from {args.source}: no such folder")
    if args.max_examples < 0:
        problems.append(f"--max-examples {args.max_examples}: expected a whole number >= 0 (0 = all)")
    if args.source is None and args.task != "SST-2":
        problems.append(f"--task {args.task}: give its GLUE files with --from DIR (only SST-2 is downloaded)")
    if problems:
        parser.error("; ".join(problems))
    try:
        prepare(args.task, args.out, args.spm, args.dict, args.source, args.workers, args.mirror, args.max_examples)
    except PrepareError as e:
        sys.exit(f"prepare: error: {e}")


if __name__ == "__main__":
    main()
