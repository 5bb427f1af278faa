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

    python scripts/prepare_glue.py --task SST-2 --from ../shared/data/sst2 --sentences OUT/tapt/SST-2.txt

--sentences FILE writes the training split's sentences, one per line and without their labels (both sentences of
a pair task), and nothing else: unlabeled in-domain text for task-adaptive pretraining, before there is a BPE.

    python scripts/prepare_glue.py --task IMDB --from ../shared/data/imdb --spm ... --dict ... --out .../IMDB

IMDB is the review classification of the Large Movie Review Dataset (Maas et al., 2011), not a GLUE task: trained on
its 25,000 training reviews, scored on the first 1,000 positive and 1,000 negative test reviews
(the test reviews are never in the pretraining text). --from is a folder of train_pos.txt.gz, train_neg.txt.gz,
test_pos.txt.gz and test_neg.txt.gz, a review per line; without it the archive is downloaded (sha256-checked).
"""
import argparse
from pathlib import Path

from fairseq_ext.data_preparation import (GLUE_TASKS, PrepareError, already_prepared, binarize, download_checked,
                                          imdb_task_examples, not_a_folder, parse_args, read_glue_tsv, run)

SST2_MIRROR = "https://raw.githubusercontent.com/clairett/pytorch-sentiment-classification/master/data/SST2"
SST2_SHA256 = {
    "train.tsv": "ec192f833a64da08f475488a77b0d0b47db47acd0f458bd18433fc793b569920",
    "dev.tsv": "eddea6b39e601dd4e7a672b53cc40fdf6019fa80522f351206c24340ca5d9359",
}


def write_split(examples, spm_model, bpe_dir, split):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    inputs = len(examples[0][0])
    for i in range(inputs):
        pieces = sp.encode([texts[i] for texts, _ in examples], out_type=str)
        (bpe_dir / f"{split}.input{i}").write_text("".join(" ".join(p) + "\n" for p in pieces), encoding="utf-8")
    (bpe_dir / f"{split}.label").write_text("".join(label + "\n" for _, label in examples), encoding="utf-8")
    return inputs


def binarize_fields(bpe_dir, bin_dir, dictionary, inputs, workers):
    """bin/input0 (and input1) in the pretraining's dictionary, and bin/label with a dictionary of its own."""
    fields = [f"input{i}" for i in range(inputs)] + ["label"]
    binarize(bin_dir, {field: ["--only-source", "--trainpref", bpe_dir / f"train.{field}", "--validpref",
                               bpe_dir / f"valid.{field}", *([] if field == "label" else ["--srcdict", dictionary])]
                       for field in fields}, workers)


def task_source(task, out, source, mirror):
    """The folder with the task's GLUE files: --from, or (SST-2) the files downloaded into OUT/raw."""
    if source:
        return Path(source)
    download_checked(mirror, SST2_SHA256, out / "raw", instead="the SST-2 files", option="--from DIR")
    return out / "raw"


def write_sentences(task, path, source=None, mirror=SST2_MIRROR, max_examples=0):
    """The training sentences of the task, without labels, one per line in path (the dev set never)."""
    path = Path(path)
    source = task_source(task, path.parent, source, mirror)
    if not (source / "train.tsv").is_file():
        raise PrepareError(f"--from {source}: missing train.tsv (the GLUE {task} files)")
    examples = read_glue_tsv(source / "train.tsv", task)[: max_examples or None]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(text + "\n" for texts, _ in examples for text in texts), encoding="utf-8")
    print(f"prepare: {task}: {len(examples):,} training examples' sentences, without labels, in {path}")
    return path


def task_examples(task, out, source, mirror):
    """{"train": (where, examples), "valid": (where, examples)}: the task's training and dev examples."""
    if task == "IMDB":
        return imdb_task_examples(source, out / "raw")
    source = task_source(task, out, source, mirror)
    dev_name = GLUE_TASKS[task][2]
    missing = [n for n in ("train.tsv", dev_name) if not (source / n).is_file()]
    if missing:
        raise PrepareError(f"--from {source}: missing {', '.join(missing)} (the GLUE {task} files)")
    return {split: (source / name, read_glue_tsv(source / name, task))
            for split, name in (("train", "train.tsv"), ("valid", dev_name))}


def prepare(task, out, spm_model, dictionary, source=None, workers=2, mirror=SST2_MIRROR, max_examples=0):
    out = Path(out)
    bin_dir = out / "bin"
    if already_prepared(bin_dir, Path("label", "dict.txt")):
        return bin_dir
    bpe_dir = out / "bpe"
    bpe_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, (where, examples) in task_examples(task, out, source, mirror).items():
        examples = examples[: max_examples or None]
        if not examples:
            raise PrepareError(f"{where}: no examples")
        inputs = write_split(examples, spm_model, bpe_dir, split)
        counts[split] = len(examples)
    binarize_fields(bpe_dir, bin_dir, dictionary, inputs, workers)
    # fairseq-preprocess pads a dictionary with madeupwordNNNN entries: they are no classes.
    labels = [line for line in (bin_dir / "label" / "dict.txt").read_text(encoding="utf-8").splitlines()
              if not line.startswith("madeupword")]
    print(f"prepare: {task}: {counts['train']:,} training and {counts['valid']:,} dev examples, {len(labels)} classes, "
          f"wrote {bin_dir}")
    return bin_dir


def option_problems(args):
    """What is wrong with the options beyond what argparse checks (None where nothing is), for parse_args."""
    inputs = [] if args.sentences else [("spm", args.spm), ("dict", args.dict)]
    return [*(f"--{name}: required (or --sentences FILE)" for name, value in inputs if value is None),
            *(f"--{name} {value}: no such file" for name, value in inputs if value and not Path(value).is_file()),
            args.sentences and args.out and "--sentences writes only FILE: give it without --out",
            not args.sentences and not args.out and "--out: required (or --sentences FILE)",
            not_a_folder(args.source),
            f"--max-examples {args.max_examples}: expected a whole number >= 0 (0 = all)"
            if args.max_examples < 0 else None,
            f"--task {args.task}: give its GLUE files with --from DIR (only SST-2 and IMDB are downloaded)"
            if args.source is None and args.task not in ("SST-2", "IMDB") else None,
            "--task IMDB: its training reviews are the imdb corpus of prepare_mono.py, not --sentences"
            if args.sentences and args.task == "IMDB" else None]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=[*GLUE_TASKS, "IMDB"], help="the GLUE task, or IMDB")
    parser.add_argument("--out", help="output folder")
    parser.add_argument("--from", dest="source", help="the task's folder of GLUE tsv files (default, SST-2 only: "
                        "download the sentence<TAB>label files)")
    parser.add_argument("--spm", help="the pretraining's sentencepiece model")
    parser.add_argument("--dict", help="the pretraining's dictionary (its bin/dict.txt)")
    parser.add_argument("--sentences", metavar="FILE",
                        help="only write the training sentences, without labels, to FILE (no --spm, --dict, --out)")
    parser.add_argument("--max-examples", type=int, default=0,
                        help="keep only the first N examples of each split (default 0: all)")
    args = parse_args(parser, argv, SST2_MIRROR, "SST-2", option_problems)
    if args.sentences:
        run(write_sentences, args.task, args.sentences, args.source, args.mirror, args.max_examples)
        return
    run(prepare, args.task, args.out, args.spm, args.dict, args.source, args.workers, args.mirror, args.max_examples)


if __name__ == "__main__":
    main()
