#!/usr/bin/env python
"""Prepare Multi30k task 1 En-Fr for fairseq: raw text -> joint sentencepiece BPE -> fairseq-preprocess.

    python scripts/prepare_multi30k.py --out runs/multi30k/data                    # download (sha256-checked)
    python scripts/prepare_multi30k.py --out DIR --from ../shared/data/multi30k    # local copy, same file names

Writes under --out: raw/ (downloads only), text/{train,valid,test}.{en,fr}, spm.model, bpe/, and bin/ (the folder
to give fairseq-train and fairseq-generate, with a joined dictionary). A finished run is not redone.
"""
import argparse
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

MIRROR = "https://github.com/multi30k/dataset/raw/master/data/task1/raw"
SHA256 = {
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
}
SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}  # fairseq split -> Multi30k name
LANGS = ("en", "fr")


class PrepareError(Exception):
    pass


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_raw(out, source_dir, mirror=MIRROR):
    """Paths of the six raw files: from --from, or downloaded into out/raw and checked against SHA256."""
    if source_dir is not None:
        source_dir = Path(source_dir)
        missing = [n for n in SHA256 if not (source_dir / n).is_file()]
        if missing:
            raise PrepareError(
                f"--from {source_dir}: missing {', '.join(missing)} (expected the Multi30k task 1 raw files: "
                f"{', '.join(SHA256)})"
            )
        for name, expected in SHA256.items():
            if sha256(source_dir / name) != expected:
                print(f"prepare: note: {source_dir / name} differs from the upstream file (sha256); using it as given")
        return {n: source_dir / n for n in SHA256}
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, expected in SHA256.items():
        path = raw / name
        if not (path.is_file() and sha256(path) == expected):
            url = f"{mirror.rstrip('/')}/{name}"
            print(f"prepare: downloading {url}")
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(f"{path}.tmp", "wb") as f:
                    shutil.copyfileobj(response, f)
            except OSError as e:
                raise PrepareError(f"cannot download {url} ({e}); give a local copy with --from DIR") from None
            if sha256(f"{path}.tmp") != expected:
                raise PrepareError(f"{url}: sha256 mismatch (corrupt download?); retry, or give --from DIR")
            os.replace(f"{path}.tmp", path)
        paths[name] = path
    return paths


def write_text(raw_paths, text_dir, train_size):
    text_dir.mkdir(parents=True, exist_ok=True)
    for split, name in SPLITS.items():
        counts = set()
        for lang in LANGS:
            with gzip.open(raw_paths[f"{name}.{lang}.gz"], "rt", encoding="utf-8") as f:
                lines = [line.strip() for line in f]
            if split == "train" and train_size:
                lines = lines[:train_size]
            counts.add(len(lines))
            (text_dir / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if len(counts) != 1:
            raise PrepareError(f"{name}: the en and fr files have different line counts {sorted(counts)}")


def train_bpe(text_dir, model_prefix, vocab_size):
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=[str(text_dir / f"train.{lang}") for lang in LANGS],
        model_prefix=str(model_prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        # fairseq's dictionary adds its own specials; keep sentencepiece's out of the pieces.
        bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
        minloglevel=2,
    )


def encode(text_dir, bpe_dir, model_file):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    bpe_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        for lang in LANGS:
            lines = (text_dir / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
            pieces = sp.encode(lines, out_type=str)
            (bpe_dir / f"{split}.{lang}").write_text("\n".join(" ".join(p) for p in pieces) + "\n", encoding="utf-8")


def fairseq_preprocess(*args):
    """The venv's fairseq-preprocess with these arguments; its console output only on failure (on success
    fairseq's own record of the run is DESTDIR/preprocess.log)."""
    tool = shutil.which("fairseq-preprocess", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    if tool is None:
        raise PrepareError("fairseq-preprocess not found: run `make setup` and use .venv/bin/python")
    done = subprocess.run([tool, *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise PrepareError(f"fairseq-preprocess failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def binarize(bpe_dir, bin_dir, workers):
    tmp = bin_dir.with_name(bin_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fairseq_preprocess("--source-lang", "en", "--target-lang", "fr", "--trainpref", bpe_dir / "train",
                       "--validpref", bpe_dir / "valid", "--testpref", bpe_dir / "test", "--destdir", tmp,
                       "--joined-dictionary", "--workers", workers)
    os.replace(tmp, bin_dir)


def prepare(out, source_dir=None, vocab_size=8000, train_size=0, workers=2, mirror=MIRROR):
    out = Path(out)
    bin_dir = out / "bin"
    if (bin_dir / "dict.en.txt").is_file():
        print(f"prepare: {bin_dir} exists, skipping")
        return bin_dir
    raw_paths = fetch_raw(out, source_dir, mirror)
    write_text(raw_paths, out / "text", train_size)
    train_bpe(out / "text", out / "spm", vocab_size)
    encode(out / "text", out / "bpe", out / "spm.model")
    binarize(out / "bpe", bin_dir, workers)
    print(f"prepare: wrote {bin_dir}")
    return bin_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--from", dest="source_dir", help="folder holding the raw files (train.en.gz, val.fr.gz, "
                        "test_2016_flickr.en.gz, ...) instead of downloading them")
    parser.add_argument("--vocab-size", type=int, default=8000, help="joint sentencepiece BPE vocabulary (default 8000)")
    parser.add_argument("--train-size", type=int, default=0, help="keep only the first N training pairs (0 = all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mirror", default=MIRROR, help=f"base URL of the raw files (default {MIRROR})")
    args = parser.parse_args(argv)
    problems = []
    if args.vocab_size < 100:
        problems.append(f"--vocab-size must be >= 100, got {args.vocab_size}")
    if args.train_size < 0:
        problems.append(f"--train-size must be >= 0 (0 = all), got {args.train_size}")
    if args.source_dir is not None and not Path(args.source_dir).is_dir():
        problems.append(f"--from {args.source_dir}: no such folder")
    if problems:
        parser.error("; ".join(problems))
    try:
        prepare(args.out, args.source_dir, args.vocab_size, args.train_size, args.workers, args.mirror)
    except PrepareError as e:
        sys.exit(f"prepare: error: {e}")


if __name__ == "__main__":
    main()
