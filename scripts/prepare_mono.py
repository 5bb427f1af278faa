#!/usr/bin/env python
"""Prepare monolingual text for RoBERTa (masked LM) pretraining: raw text -> sentencepiece BPE -> fairseq-preprocess.

    python scripts/prepare_mono.py --out runs/roberta/mono                            # IMDB reviews, downloaded
    python scripts/prepare_mono.py --out DIR --corpus imdb --from ../shared/data/imdb  # a local copy, same names
    python scripts/prepare_mono.py --out DIR --corpus captions                        # Multi30k captions
    python scripts/prepare_mono.py --out DIR --from my_corpus/                         # your text: *.txt, *.gz
    python scripts/prepare_mono.py --out DIR --from my_corpus/ --documents             # a document per line
    python scripts/prepare_mono.py --out DIR --from my_corpus/ --add sst2_train.txt    # + a task's sentences

The corpora (--corpus): imdb, the training reviews of the Large Movie Review Dataset (Maas et al., 2011;
train_unsup, train_pos and train_neg: 75,000 reviews; never its test reviews, which the IMDB task scores on),
downloaded from ai.stanford.edu (sha256-checked) or read from --from, a folder of <split>.txt.gz with a review per
line; captions, the English captions of Multi30k task 2 (train.1.en.gz ... train.5.en.gz, 145,000 lines) from the
multi30k/dataset repository or --from a local copy. Without --corpus, --from is your text (a file, or a folder of
*.txt / *.gz), one sentence per line, or with --documents one document per line.

A document (a review) is split into sentences, one sample each, and held out whole: every --valid-every-th
document goes to validation, so no validation sentence shares a review with a training one. Every line is cut
into pieces of at most --max-words words, so that no sample outgrows the model's positions. --add FILE (any number
of times) puts more text after it, one sentence per line, e.g. a task's training sentences without labels for
task-adaptive pretraining (Gururangan et al., 2020): the BPE and the model then see the task's words;
--add-repeat N writes its training lines N times, to weigh a small text up (its held-out lines once, never also
for training). Writes under --out: raw/ (downloads only), text/{train,valid}.txt, spm.model, bpe/, and bin/
(dict.txt, train, valid: the folder for fairseq-train --task masked_lm). A finished run is not redone.
"""
from pathlib import Path

from fairseq_ext.data_preparation import (PrepareError, already_prepared, argument_parser, binarize, cut_words,
                                          document_sentences, download_checked, encode_files, imdb_files, parse_args,
                                          run, split_train_valid, too_small, train_sentencepiece)

MIRROR = "https://github.com/multi30k/dataset/raw/master/data/task2/raw"
SHA256 = {
    "train.1.en.gz": "a0e057f07a9733199c0d755d77f6d583dc6f40a3180734b1130a216e2fdf3a3b",
    "train.2.en.gz": "d79dd70a9eafb2d1fe40151621278c4ae69b3c148c5052a53d7c7a41bf3ba023",
    "train.3.en.gz": "86e16fdcc699bcb6bca0f87c3cf1051f7de5ee3674dd588cedc5200194282749",
    "train.4.en.gz": "3771b84e010ad6197806d2a1188cb07c12149e3e0d178dd5966dee5763733686",
    "train.5.en.gz": "73988689307fe836994eae59735dc840c15da9775455fa76e6ed22606a042a91",
}
TEXT_SUFFIXES = (".txt", ".gz", ".en", ".raw")
CORPORA = ("imdb", "captions")
IMDB_PRETRAINING_SPLITS = ("train_unsup", "train_pos", "train_neg")  # never the test reviews
# Pieces per sample at most: with </s> and the <s> that fairseq's masked_lm prepends, 128 positions (the recipe's
# --max-positions). fairseq's --shorten-method truncate cuts an eos-mode sample to --tokens-per-sample before
# prepending <s>, one too many: a longer line would fail fairseq-train's first validation.
MAX_PIECES = 126


def source_files(out, source, mirror, corpus):
    """The text files to read: the corpus' (downloaded, or from --from, a local copy), or --from's own (a file, or
    a folder's text files)."""
    if corpus == "imdb":
        return list(imdb_files(IMDB_PRETRAINING_SPLITS, source, out / "raw").values())
    if corpus == "captions" and source is not None:
        missing = [name for name in SHA256 if not (Path(source) / name).is_file()]
        if missing:
            raise PrepareError(f"--from {source}: no {', '.join(missing)} in it (the Multi30k task 2 captions)")
        return [Path(source) / name for name in SHA256]
    if source is not None:
        source = Path(source)
        if source.is_file():
            return [source]
        files = sorted(p for p in source.iterdir() if p.is_file() and p.name.endswith(TEXT_SUFFIXES))
        if not files:
            raise PrepareError(f"--from {source}: no text files in it (*{', *'.join(TEXT_SUFFIXES)})")
        return files
    return list(download_checked(mirror, SHA256, out / "raw", instead="your text", option="--from PATH").values())


def prepare(out, source=None, vocab_size=8000, valid_every=50, max_lines=0, workers=2, mirror=MIRROR, add=(),
            add_repeat=1, corpus="imdb", documents=None, max_words=50, max_pieces=MAX_PIECES):
    """documents: whether a line of the text is a document (default: for the imdb corpus)."""
    out = Path(out)
    bin_dir = out / "bin"
    if already_prepared(bin_dir, "dict.txt"):
        return bin_dir
    text_dir, bpe_dir = out / "text", out / "bpe"
    if documents is None:
        documents = corpus == "imdb"
    samples = (lambda line: document_sentences(line, max_words)) if documents else (
        lambda line: cut_words(line, max_words))
    split_train_valid(source_files(out, source, mirror, corpus), text_dir, valid_every, max_lines,
                      [Path(p) for p in add], add_repeat, samples)
    # A sample of the lines, should the corpus be large.
    train_sentencepiece([text_dir / "train.txt"], out / "spm", vocab_size, sample=10_000_000)
    bpe_dir.mkdir(exist_ok=True)
    splits = ("train", "valid")
    encode_files(out / "spm.model", [(text_dir / f"{split}.txt", bpe_dir / f"{split}.txt") for split in splits],
                 max_pieces)
    binarize(bin_dir, {"": ["--only-source", "--trainpref", bpe_dir / "train.txt", "--validpref",
                            bpe_dir / "valid.txt"]}, workers)
    print(f"prepare: wrote {bin_dir}")
    return bin_dir


def main(argv=None):
    parser = argument_parser(__doc__, "with --corpus, a local copy of it; else your text: a file, or a folder of "
                             "them (*.txt, *.gz, ...), one sentence (--documents: one document) per line",
                             vocab_size=8000, joint=False)
    parser.add_argument("--corpus", choices=CORPORA,
                        help="a corpus this script knows (default without --from: imdb, downloaded)")
    parser.add_argument("--documents", action="store_true",
                        help="a line of --from is a document: split into sentences, held out whole (default for "
                             "--corpus imdb)")
    parser.add_argument("--max-words", type=int, default=50,
                        help="cut longer lines (sentences) into pieces of at most this many words (default 50)")
    parser.add_argument("--valid-every", type=int, default=50, help="hold out every Nth line (default 50: 2%%)")
    parser.add_argument("--max-lines", type=int, default=0, help="read only the first N lines of --from (0 = all)")
    parser.add_argument("--add", action="append", default=[], metavar="FILE",
                        help="more text after --from's, one sentence per line (may be given again)")
    parser.add_argument("--add-repeat", type=int, default=1, metavar="N",
                        help="write the --add text's training lines N times (its validation lines once; default 1)")
    args = parse_args(parser, argv, MIRROR, "the captions", lambda args: [
        too_small("--vocab-size", args.vocab_size, 100), too_small("--valid-every", args.valid_every, 2),
        too_small("--max-words", args.max_words, 1),
        args.source is not None and not Path(args.source).exists() and f"--from {args.source}: no such file or folder",
        *(f"--add {path}: no such file" for path in args.add if not Path(path).is_file()),
        too_small("--add-repeat", args.add_repeat, 1)])
    corpus = args.corpus or (None if args.source is not None else "imdb")
    run(prepare, args.out, args.source, args.vocab_size, args.valid_every, args.max_lines, args.workers, args.mirror,
        args.add, args.add_repeat, corpus, args.documents or None, args.max_words)


if __name__ == "__main__":
    main()
