#!/usr/bin/env python
"""Prepare WMT14 En-Fr for fairseq the way fairseq's examples/translation/prepare-wmt14en2fr.sh does, with a joint
sentencepiece BPE instead of Moses tokenization + subword-nmt.

    python scripts/prepare_wmt14_en_fr.py --out runs/wmt14_en_fr/data              # download from statmt.org
    python scripts/prepare_wmt14_en_fr.py --out DIR --from path/to/mirror          # the same archives, local

Training: Europarl v7, Common Crawl, UN, News Commentary v9 and the 10^9 French-English corpus (giga-fren);
validation: newstest2012 + newstest2013 (dev.tgz); test: newstest2014 (test-full.tgz, SGML). Training and
validation pairs are cleaned as clean-corpus-n.perl -ratio 1.5 ... 1 250 does (on BPE pieces): both sides 1-250
pieces, neither side more than 1.5 times longer. The test set is not cleaned.

Writes under --out: orig/ (archives when downloaded, and the files taken out of them), text/ (plain text; text/
test.fr is the reference for detokenized sacrebleu), spm.model, bpe/, and bin/ (fairseq-preprocess
--joined-dictionary). Each finished stage is skipped when run again.
"""
import itertools
import multiprocessing
import os
import tarfile
from pathlib import Path

from fairseq_ext.data_preparation import (PrepareError, already_prepared, argument_parser, binarize_translation,
                                          download, encode_pairs, not_a_folder, open_text, parse_args, run,
                                          sgml_segments, too_small, train_sentencepiece)

MIRROR = "http://statmt.org"
# archive -> its path under MIRROR (as in fairseq's prepare-wmt14en2fr.sh, plus dev.tgz for newstest2012/13).
ARCHIVES = {
    "training-parallel-europarl-v7.tgz": "wmt13/training-parallel-europarl-v7.tgz",
    "training-parallel-commoncrawl.tgz": "wmt13/training-parallel-commoncrawl.tgz",
    "training-parallel-un.tgz": "wmt13/training-parallel-un.tgz",
    "training-parallel-nc-v9.tgz": "wmt14/training-parallel-nc-v9.tgz",
    "training-giga-fren.tar": "wmt10/training-giga-fren.tar",
    "dev.tgz": "wmt14/dev.tgz",
    "test-full.tgz": "wmt14/test-full.tgz",
}
# Training corpora: (archive, path of the files inside it without the .en/.fr ending, compressed inside).
TRAIN = [
    ("training-parallel-europarl-v7.tgz", "training/europarl-v7.fr-en", ""),
    ("training-parallel-commoncrawl.tgz", "commoncrawl.fr-en", ""),
    ("training-parallel-un.tgz", "un/undoc.2000.fr-en", ""),
    ("training-parallel-nc-v9.tgz", "training/news-commentary-v9.fr-en", ""),
    ("training-giga-fren.tar", "giga-fren.release2.fixed", ".gz"),
]
VALID = [("dev.tgz", "dev/newstest2012", ""), ("dev.tgz", "dev/newstest2013", "")]
TEST = ("test-full.tgz", {"en": "test-full/newstest2014-fren-src.en.sgm", "fr": "test-full/newstest2014-fren-ref.fr.sgm"})
LANGS = ("en", "fr")
CHUNK = 20000  # pairs per encoding task


def fetch(out, source_dir, mirror):
    """Paths of the seven archives: from --from, or downloaded into out/orig."""
    if source_dir is not None:
        source_dir = Path(source_dir)
        missing = [name for name in ARCHIVES if not (source_dir / name).is_file()]
        if missing:
            raise PrepareError(f"--from {source_dir}: missing {', '.join(missing)} (the archives of fairseq's "
                               f"prepare-wmt14en2fr.sh, by their names: {', '.join(ARCHIVES)})")
        return {name: source_dir / name for name in ARCHIVES}
    orig = out / "orig"
    orig.mkdir(parents=True, exist_ok=True)
    return {name: download(f"{mirror.rstrip('/')}/{path}", orig / name, instead="a local copy of the archives",
                           option="--from DIR")
            for name, path in ARCHIVES.items()}


def extract(archives, dest):
    """Take the files this recipe reads out of the archives (not the other language pairs they also hold)."""
    wanted = {}
    for archive, stem, suffix in TRAIN + VALID:
        wanted.setdefault(archive, []).extend(f"{stem}.{lang}{suffix}" for lang in LANGS)
    wanted.setdefault(TEST[0], []).extend(TEST[1].values())
    for archive, members in wanted.items():
        todo = [m for m in members if not (dest / m).is_file()]
        if not todo:
            continue
        print(f"prepare: extracting {', '.join(todo)} from {archives[archive].name}", flush=True)
        try:
            with tarfile.open(archives[archive]) as tar:
                names = set(tar.getnames())
                absent = [m for m in todo if m not in names]
                if absent:
                    raise PrepareError(f"{archives[archive]}: no {', '.join(absent)} in it (is it the WMT archive?)")
                for member in todo:
                    tar.extract(member, dest, filter="data")
        except tarfile.TarError as e:
            raise PrepareError(f"{archives[archive]}: not a readable tar archive ({e})") from None


def concatenate(corpora, orig, text_dir, split):
    """Write text/SPLIT.{en,fr}: the corpora one after the other, one sentence per line, stripped."""
    outs = {lang: open(text_dir / f"{split}.{lang}.tmp", "w", encoding="utf-8") for lang in LANGS}
    for _, stem, suffix in corpora:
        paths = [orig / f"{stem}.{lang}{suffix}" for lang in LANGS]
        with open_text(paths[0]) as en, open_text(paths[1]) as fr:
            count = 0
            for count, pair in enumerate(itertools.zip_longest(en, fr), start=1):
                if None in pair:
                    raise PrepareError(f"{stem}: the en and fr files have different line counts")
                for lang, line in zip(LANGS, pair):
                    outs[lang].write(line.strip() + "\n")
        print(f"prepare: {split}: {stem}: {count:,} pairs", flush=True)
    for lang, f in outs.items():
        f.close()
        os.replace(text_dir / f"{split}.{lang}.tmp", text_dir / f"{split}.{lang}")


def write_test(orig, text_dir):
    segments = {lang: sgml_segments(orig / TEST[1][lang]) for lang in LANGS}
    if len(segments["en"]) != len(segments["fr"]) or not segments["en"]:
        raise PrepareError(f"newstest2014: {len(segments['en'])} source and {len(segments['fr'])} reference segments")
    for lang in LANGS:
        (text_dir / f"test.{lang}").write_text("\n".join(segments[lang]) + "\n", encoding="utf-8")
    print(f"prepare: test: newstest2014: {len(segments['en']):,} pairs", flush=True)


_processor = None


def _load_model(model_file):
    global _processor
    import sentencepiece as spm

    _processor = spm.SentencePieceProcessor(model_file=model_file)


def _encode_chunk(job):
    """encode_pairs on a chunk of (pairs, clean, max_len, ratio), in a pool worker."""
    return encode_pairs(_processor, *job)


def chunks_of_pairs(text_dir, split):
    with open(text_dir / f"{split}.en", encoding="utf-8") as en, open(text_dir / f"{split}.fr", encoding="utf-8") as fr:
        pairs = zip((line.rstrip("\n") for line in en), (line.rstrip("\n") for line in fr))
        while chunk := list(itertools.islice(pairs, CHUNK)):
            yield chunk


def encode(text_dir, bpe_dir, model_file, workers, max_len, ratio):
    """text/ -> bpe/, in parallel chunks (streamed: the full training set is ~40M pairs)."""
    bpe_dir.mkdir(parents=True, exist_ok=True)
    with multiprocessing.Pool(workers, initializer=_load_model, initargs=(str(model_file),)) as pool:
        for split in ("train", "valid", "test"):
            clean = split != "test"
            jobs = ((chunk, clean, max_len, ratio) for chunk in chunks_of_pairs(text_dir, split))
            total = kept = 0
            with open(bpe_dir / f"{split}.en", "w", encoding="utf-8") as out_en, \
                    open(bpe_dir / f"{split}.fr", "w", encoding="utf-8") as out_fr:
                for count, pairs in pool.imap(_encode_chunk, jobs):
                    total, kept = total + count, kept + len(pairs)
                    for e, f in pairs:
                        out_en.write(e + "\n")
                        out_fr.write(f + "\n")
            note = f", {total - kept:,} dropped by cleaning" if clean else ""
            print(f"prepare: bpe {split}: {kept:,} pairs{note}", flush=True)
            if kept == 0:
                raise PrepareError(f"{split}: no pair left after cleaning (max length {max_len}, ratio {ratio})")


def prepare(out, source_dir=None, vocab_size=40000, workers=4, mirror=MIRROR, spm_sample=10_000_000,
            max_len=250, ratio=1.5):
    out = Path(out)
    bin_dir = out / "bin"
    if already_prepared(bin_dir, "dict.en.txt"):
        return bin_dir
    archives = fetch(out, source_dir, mirror)
    extract(archives, out / "orig")
    text_dir = out / "text"
    text_dir.mkdir(parents=True, exist_ok=True)
    if not (text_dir / "test.fr").is_file():
        concatenate(TRAIN, out / "orig", text_dir, "train")
        concatenate(VALID, out / "orig", text_dir, "valid")
        write_test(out / "orig", text_dir)
    if not (out / "spm.model").is_file():
        print(f"prepare: learning a {vocab_size:,}-piece joint sentencepiece BPE", flush=True)
        # 40M lines do not fit in memory: learn from a random sample of them.
        train_sentencepiece([text_dir / f"train.{lang}" for lang in LANGS], out / "spm", vocab_size, spm_sample)
    encode(text_dir, out / "bpe", out / "spm.model", workers, max_len, ratio)
    binarize_translation(out / "bpe", bin_dir, workers)
    print(f"prepare: wrote {bin_dir}")
    return bin_dir


def main(argv=None):
    parser = argument_parser(__doc__, "folder holding the archives (training-parallel-europarl-v7.tgz, ..., dev.tgz, "
                             "test-full.tgz) instead of downloading them", source_dest="source_dir", vocab_size=40000)
    parser.add_argument("--spm-sample", type=int, default=10_000_000,
                        help="sentences sampled to learn the BPE from (default 10M)")
    parser.add_argument("--max-len", type=int, default=250, help="cleaning: most pieces per side (default 250)")
    parser.add_argument("--ratio", type=float, default=1.5, help="cleaning: most length ratio (default 1.5)")
    args = parse_args(parser, argv, MIRROR, "the archives", workers=min(8, os.cpu_count() or 1), problems=lambda args: [
        too_small("--vocab-size", args.vocab_size, 100), not_a_folder(args.source_dir)])
    run(prepare, args.out, args.source_dir, args.vocab_size, args.workers, args.mirror, args.spm_sample, args.max_len,
        args.ratio)


if __name__ == "__main__":
    main()
