#!/usr/bin/env python
"""Prepare Multi30k task 1 En-Fr for fairseq: raw text -> joint sentencepiece BPE -> fairseq-preprocess.

    python scripts/prepare_multi30k.py --out runs/multi30k/data                    # download (sha256-checked)
    python scripts/prepare_multi30k.py --out DIR --from ../shared/data/multi30k    # local copy, same file names

Writes under --out: raw/ (downloads only), text/{train,valid,test}.{en,fr}, spm.model, bpe/, and bin/ (the folder
to give fairseq-train and fairseq-generate, with a joined dictionary). A finished run is not redone.
"""
import gzip
from pathlib import Path

from fairseq_ext.data_preparation import (PrepareError, already_prepared, argument_parser, binarize_translation,
                                          download_checked, encode_files, not_a_folder, parse_args, run, sha256,
                                          too_small, train_sentencepiece)

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
    return download_checked(mirror, SHA256, out / "raw", instead="a local copy", option="--from DIR")


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


def prepare(out, source_dir=None, vocab_size=8000, train_size=0, workers=2, mirror=MIRROR):
    out = Path(out)
    bin_dir = out / "bin"
    if already_prepared(bin_dir, "dict.en.txt"):
        return bin_dir
    text_dir, bpe_dir = out / "text", out / "bpe"
    write_text(fetch_raw(out, source_dir, mirror), text_dir, train_size)
    train_sentencepiece([text_dir / f"train.{lang}" for lang in LANGS], out / "spm", vocab_size)
    bpe_dir.mkdir(parents=True, exist_ok=True)
    encode_files(out / "spm.model", [(text_dir / f"{split}.{lang}", bpe_dir / f"{split}.{lang}")
                                     for split in SPLITS for lang in LANGS])
    binarize_translation(bpe_dir, bin_dir, workers)
    print(f"prepare: wrote {bin_dir}")
    return bin_dir


def main(argv=None):
    parser = argument_parser(__doc__, "folder holding the raw files (train.en.gz, val.fr.gz, test_2016_flickr.en.gz, "
                             "...) instead of downloading them", source_dest="source_dir", vocab_size=8000)
    parser.add_argument("--train-size", type=int, default=0, help="keep only the first N training pairs (0 = all)")
    args = parse_args(parser, argv, MIRROR, "the raw files", lambda args: [
        too_small("--vocab-size", args.vocab_size, 100), too_small("--train-size", args.train_size, 0, " (0 = all)"),
        not_a_folder(args.source_dir)])
    run(prepare, args.out, args.source_dir, args.vocab_size, args.train_size, args.workers, args.mirror)


if __name__ == "__main__":
    main()
