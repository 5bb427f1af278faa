#!/usr/bin/env python
"""Prepare monolingual text for RoBERTa (masked LM) pretraining: raw text -> sentencepiece BPE -> fairseq-preprocess.

    python scripts/prepare_mono.py --out runs/roberta/mono                          # Multi30k captions, downloaded
    python scripts/prepare_mono.py --out DIR --from ../shared/data/multi30k/mono    # a local copy, same names
    python scripts/prepare_mono.py --out DIR --from my_corpus/                       # your text: *.txt, *.gz

One sentence (or document) per line. Every --valid-every-th line is held out for validation. The default text is
the English captions of Multi30k task 2 (train.1.en.gz ... train.5.en.gz, 145,000 lines) from the multi30k/dataset
repository. Writes under --out: raw/ (downloads only), text/{train,valid}.txt, spm.model, bpe/, and bin/ (dict.txt,
train, valid: the folder for fairseq-train --task masked_lm). A finished run is not redone.
"""
import argparse
import gzip
import itertools
import os
import shutil
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_multi30k import PrepareError, fairseq_preprocess, sha256  # noqa: E402

MIRROR = "https://github.com/multi30k/dataset/raw/master/data/task2/raw"
SHA256 = {
    "train.1.en.gz": "a0e057f07a9733199c0d755d77f6d583dc6f40a3180734b1130a216e2fdf3a3b",
    "train.2.en.gz": "d79dd70a9eafb2d1fe40151621278c4ae69b3c148c5052a53d7c7a41bf3ba023",
    "train.3.en.gz": "86e16fdcc699bcb6bca0f87c3cf1051f7de5ee3674dd588cedc5200194282749",
    "train.4.en.gz": "3771b84e010ad6197806d2a1188cb07c12149e3e0d178dd5966dee5763733686",
    "train.5.en.gz": "73988689307fe836994eae59735dc840c15da9775455fa76e6ed22606a042a91",
}
TEXT_SUFFIXES = (".txt", ".gz", ".en", ".raw")


def source_files(out, source, mirror):
    """The text files to read: --from's (a file, or a folder's text files), or the downloaded captions."""
    if source is not None:
        source = Path(source)
        if source.is_file():
            return [source]
        files = sorted(p for p in source.iterdir() if p.is_file() and p.name.endswith(TEXT_SUFFIXES))
        if not files:
            raise PrepareError(f"--from {source}: no text files in it (*{', *'.join(TEXT_SUFFIXES)})")
        return files
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, expected in SHA256.items():
        path = raw / name
        if path.is_file() and sha256(path) == expected:
            continue
        url = f"{mirror.rstrip('/')}/{name}"
        print(f"prepare: downloading {url}", flush=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(f"{path}.tmp", "wb") as f:
                shutil.copyfileobj(response, f)
        except OSError as e:
            raise PrepareError(f"cannot download {url} ({e}); give your text with --from PATH") from None
        if sha256(f"{path}.tmp") != expected:
            raise PrepareError(f"{url}: sha256 mismatch (corrupt download?); retry, or give --from PATH")
        os.replace(f"{path}.tmp", path)
    return [raw / name for name in SHA256]


def nonempty_lines(files):
    for path in files:
        with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as f:
            for line in f:
                if line := line.strip():
                    yield line


def split_text(files, text_dir, valid_every, max_lines):
    """text/train.txt and text/valid.txt, streamed (a user's corpus may not fit in memory)."""
    text_dir.mkdir(parents=True, exist_ok=True)
    lines = nonempty_lines(files)
    if max_lines:
        lines = itertools.islice(lines, max_lines)
    counts = {"train": 0, "valid": 0}
    with open(text_dir / "train.txt", "w", encoding="utf-8") as train, \
            open(text_dir / "valid.txt", "w", encoding="utf-8") as valid:
        for index, line in enumerate(lines, start=1):
            held_out = index % valid_every == 0
            (valid if held_out else train).write(line + "\n")
            counts["valid" if held_out else "train"] += 1
    if not counts["valid"]:
        raise PrepareError(f"only {counts['train']} non-empty lines: too few to hold out every {valid_every}th "
                           f"for validation")
    print(f"prepare: {counts['train']:,} training and {counts['valid']:,} validation lines", flush=True)


def train_bpe(text_dir, model_prefix, vocab_size):
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=str(text_dir / "train.txt"),
        model_prefix=str(model_prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        input_sentence_size=10_000_000,  # a sample, should the corpus be large
        shuffle_input_sentence=True,
        # fairseq's dictionary adds its own specials; keep sentencepiece's out of the pieces.
        bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
        minloglevel=2,
    )


def encode_file(model_file, source, target):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    with open(source, encoding="utf-8") as f, open(target, "w", encoding="utf-8") as out:
        while lines := [line.rstrip("\n") for _, line in zip(range(100_000), f)]:
            out.writelines(" ".join(pieces) + "\n" for pieces in sp.encode(lines, out_type=str))


def binarize(bpe_dir, bin_dir, workers):
    tmp = bin_dir.with_name(bin_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fairseq_preprocess("--only-source", "--trainpref", bpe_dir / "train.txt", "--validpref", bpe_dir / "valid.txt",
                       "--destdir", tmp, "--workers", workers)
    os.replace(tmp, bin_dir)


def prepare(out, source=None, vocab_size=8000, valid_every=50, max_lines=0, workers=2, mirror=MIRROR):
    out = Path(out)
    bin_dir = out / "bin"
    if (bin_dir / "dict.txt").is_file():
        print(f"prepare: {bin_dir} exists, skipping")
        return bin_dir
    split_text(source_files(out, source, mirror), out / "text", valid_every, max_lines)
    train_bpe(out / "text", out / "spm", vocab_size)
    (out / "bpe").mkdir(exist_ok=True)
    for split in ("train", "valid"):
        encode_file(out / "spm.model", out / "text" / f"{split}.txt", out / "bpe" / f"{split}.txt")
    binarize(out / "bpe", bin_dir, workers)
    print(f"prepare: wrote {bin_dir}")
    return bin_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--from", dest="source", help="a text file, or a folder of them (*.txt, *.gz, ...), one "
                        "sentence per line; default: download the Multi30k task 2 English captions")
    parser.add_argument("--vocab-size", type=int, default=8000, help="sentencepiece BPE vocabulary (default 8000)")
    parser.add_argument("--valid-every", type=int, default=50, help="hold out every Nth line (default 50: 2%%)")
    parser.add_argument("--max-lines", type=int, default=0, help="read only the first N lines (0 = all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mirror", default=MIRROR, help=f"base URL of the captions (default {MIRROR})")
    args = parser.parse_args(argv)
    problems = []
    if args.vocab_size < 100:
        problems.append(f"--vocab-size must be >= 100, got {args.vocab_size}")
    if args.valid_every < 2:
        problems.append(f"--valid-every must be >= 2, got {args.valid_every}")
    if args.source is not None and not Path(args.source).exists():
        problems.append(f"--from {args.source}: no such file or folder")
    if problems:
        parser.error("; ".join(problems))
    try:
        prepare(args.out, args.source, args.vocab_size, args.valid_every, args.max_lines, args.workers, args.mirror)
    except PrepareError as e:
        sys.exit(f"prepare: error: {e}")


if __name__ == "__main__":
    main()
