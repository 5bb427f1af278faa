"""What the recipes' data preparation scripts (scripts/prepare_*.py) share, so that each script holds only its
command line and its corpus' layout, and no script imports another.

The command line they have in common: --out, --from, --vocab-size, --workers and --mirror, every problem with the
options told in one usage error, and a PrepareError told in one line, without a traceback. The pipeline steps:
downloads checked against a sha256, a sentencepiece BPE learned and applied, and fairseq-preprocess run into a
folder that appears only once it is complete. And the readers of the recipes' source formats (GLUE tsv files, WMT
SGML, the WMT cleaning rule, held-out lines of monolingual text): they live here, not in their scripts, so that the
tests call them in-process without loading a script by its path.

Plain Python and subprocesses: importing this module loads neither fairseq nor torch (fairseq-preprocess runs as
the venv's command), and sentencepiece only inside the steps that use it.
"""
import argparse
import csv
import gzip
import hashlib
import itertools
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path


class PrepareError(Exception):
    """A problem with the user's input, the network or a tool, in one line: the scripts print it as
    ``prepare: error: ...`` and exit 1, without a traceback."""


# --- the scripts' command line -----------------------------------------------------------------------------------


def argument_parser(doc, source_help, source_dest="source", vocab_size=None, joint=True):
    """A prepare script's parser: its docstring as the --help text (examples kept as written), then --out, --from
    and, given a default, --vocab-size (of a joint BPE, or of a one-language one). The script adds its own options,
    and parse_args the last ones."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--from", dest=source_dest, help=source_help)
    if vocab_size:
        parser.add_argument("--vocab-size", type=int, default=vocab_size,
                            help=f"{'joint ' if joint else ''}sentencepiece BPE vocabulary (default {vocab_size})")
    return parser


def parse_args(parser, argv, mirror, mirror_what, problems, workers=2):
    """argv parsed, once --workers and --mirror (base URL of mirror_what) are added: the last options of every
    script. Every problem that problems(args) lists (its falsy entries are none) is reported in one usage error,
    so that a user fixes them all in one go."""
    parser.add_argument("--workers", type=int, default=workers)
    parser.add_argument("--mirror", default=mirror, help=f"base URL of {mirror_what} (default {mirror})")
    args = parser.parse_args(argv)
    found = [problem for problem in problems(args) if problem]
    if found:
        parser.error("; ".join(found))
    return args


def too_small(option, value, minimum, note=""):
    """The problem with an option's value below its minimum, or None."""
    return f"{option} must be >= {minimum}{note}, got {value}" if value < minimum else None


def not_a_folder(source):
    """The problem with a --from that is given but is no folder, or None."""
    return f"--from {source}: no such folder" if source is not None and not Path(source).is_dir() else None


def run(prepare, *args):
    """prepare(*args); a PrepareError ends the program with its one line and exit status 1, without a traceback."""
    try:
        return prepare(*args)
    except PrepareError as e:
        sys.exit(f"prepare: error: {e}")


def already_prepared(bin_dir, marker):
    """Whether an earlier run prepared bin_dir (it holds marker), said when it did: a finished run is not redone
    (binarize makes bin_dir appear only once it is complete, so the marker in it means a finished run)."""
    if (bin_dir / marker).is_file():
        print(f"prepare: {bin_dir} exists, skipping")
        return True
    return False


# --- downloads ---------------------------------------------------------------------------------------------------


def sha256(path):
    """The hex sha256 of a file, read in blocks (some of the corpora are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url, path, expected_sha256=None, *, instead, option):
    """Download url to path, unless path is there already (and has the expected sha256, when one is given).

    The download goes to path.tmp and is renamed to path only once it is complete and checked, so that an
    interrupted or corrupt download is never taken for the file by a later run. The errors tell the user what to
    give instead: ``give {instead} with {option}``, e.g. instead="a local copy", option="--from DIR".
    """
    path = Path(path)
    if path.is_file() and (expected_sha256 is None or sha256(path) == expected_sha256):
        return path
    print(f"prepare: downloading {url}", flush=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f, 1 << 24)
    except OSError as e:
        raise PrepareError(f"cannot download {url} ({e}); give {instead} with {option}") from None
    if expected_sha256 is not None and sha256(tmp) != expected_sha256:
        raise PrepareError(f"{url}: sha256 mismatch (corrupt download?); retry, or give {option}")
    os.replace(tmp, path)
    return path


def download_checked(mirror, checksums, dest, *, instead, option):
    """{name: path} of the files that checksums names ({name: sha256}), each downloaded from mirror/name into dest
    where dest does not already hold it intact; instead and option as for download."""
    dest.mkdir(parents=True, exist_ok=True)
    return {name: download(f"{mirror.rstrip('/')}/{name}", dest / name, expected, instead=instead, option=option)
            for name, expected in checksums.items()}


def open_text(path):
    """A text file for reading, gzip-compressed or not (by its .gz ending)."""
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


# --- the Large Movie Review Dataset (IMDB) ---------------------------------------------------------------------

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
# {split: the archive's folder}; each split becomes one file, a review per line: <split>.txt.gz
IMDB_SPLITS = {"train_unsup": "aclImdb/train/unsup", "train_pos": "aclImdb/train/pos",
               "train_neg": "aclImdb/train/neg", "test_pos": "aclImdb/test/pos", "test_neg": "aclImdb/test/neg"}


def imdb_review(text):
    """A review as one line: its HTML line breaks and runs of white space made single spaces."""
    return " ".join(text.replace("<br />", " ").split())


def imdb_files(splits, source=None, dest=None):
    """{split: path of <split>.txt.gz, one review per line} for splits: from source, a folder in that layout (a
    local copy), or converted from the archive downloaded into dest (sha256-checked; the reviews of a split in
    the order of their numeric ids)."""
    names = {split: f"{split}.txt.gz" for split in splits}
    if source is not None:
        missing = [name for name in names.values() if not (Path(source) / name).is_file()]
        if missing:
            raise PrepareError(f"--from {source}: no {', '.join(missing)} in it (the IMDB reviews, one per line)")
        return {split: Path(source) / name for split, name in names.items()}
    dest = Path(dest)
    paths = {split: dest / name for split, name in names.items()}
    if all(path.is_file() for path in paths.values()):
        return paths
    dest.mkdir(parents=True, exist_ok=True)
    archive = download(IMDB_URL, dest / "aclImdb_v1.tar.gz", IMDB_SHA256, instead="a local copy of the reviews",
                       option="--from DIR")
    print(f"prepare: converting {archive.name} to one review per line", flush=True)
    reviews = {split: [] for split in splits}
    with tarfile.open(archive) as tar:
        for member in tar:
            folder, _, name = member.name.rpartition("/")
            split = next((s for s in splits if IMDB_SPLITS[s] == folder), None)
            if split is not None and member.isfile() and name.endswith(".txt"):
                review_id = int(name.split("_")[0])
                reviews[split].append((review_id, imdb_review(tar.extractfile(member).read().decode("utf-8"))))
    for split, path in paths.items():
        tmp = path.with_name(path.name + ".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            f.writelines(review + "\n" for _, review in sorted(reviews[split]))
        os.replace(tmp, path)
    return paths


def imdb_examples(files, split, per_class=0):
    """([review], label) of an IMDB split ("train" or "test"; files as imdb_files gives them), label "1" for a
    positive review and "0" for a negative one, the two classes interleaved; per_class > 0 keeps the first
    per_class of each."""
    classes = []
    for label, polarity in (("1", "pos"), ("0", "neg")):
        with open_text(files[f"{split}_{polarity}"]) as f:
            reviews = [line.strip() for line in itertools.islice(f, per_class or None)]
        classes.append([([review], label) for review in reviews])
    return [example for pair in itertools.zip_longest(*classes) for example in pair if example is not None]


IMDB_DEV_PER_CLASS = 1000  # 2,000 test reviews: enough to tell models apart, few enough to score every sweep config


def imdb_task_examples(source=None, dest=None, dev_per_class=IMDB_DEV_PER_CLASS):
    """IMDB review classification as {"train": (where, examples), "valid": (where, examples)}: every training
    review, and the first dev_per_class positive and negative test reviews (imdb_files: source or dest)."""
    files = imdb_files(("train_pos", "train_neg", "test_pos", "test_neg"), source, dest)
    return {"train": (files["train_pos"].parent, imdb_examples(files, "train")),
            "valid": (files["test_pos"].parent, imdb_examples(files, "test", dev_per_class))}


# --- sentencepiece -----------------------------------------------------------------------------------------------


def train_sentencepiece(inputs, model_prefix, vocab_size, sample=0):
    """Learn a BPE sentencepiece model (model_prefix.model) from the text files inputs, one model for all of them
    (a joint BPE for a language pair). sample > 0 learns from that many lines drawn at random (a large corpus does
    not fit in memory); 0 from all lines."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=[str(path) for path in inputs],
        model_prefix=str(model_prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        input_sentence_size=sample,
        shuffle_input_sentence=True,
        # fairseq's dictionary adds its own specials; keep sentencepiece's out of the pieces.
        bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
        minloglevel=2,
    )


def encode_files(model_file, sources_and_targets, max_pieces=0):
    """Write each (source, target) pair's target: its source's lines as space-separated sentencepiece pieces, one
    line for a line, or, given max_pieces, a longer line as several lines of at most max_pieces pieces (so that no
    sample outgrows a model's positions). Streamed in blocks of lines, as a user's corpus may not fit in memory."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    for source, target in sources_and_targets:
        with open(source, encoding="utf-8") as f, open(target, "w", encoding="utf-8") as out:
            while lines := [line.rstrip("\n") for _, line in zip(range(100_000), f)]:
                for pieces in sp.encode(lines, out_type=str):
                    parts = [pieces[i:i + max_pieces] for i in range(0, len(pieces), max_pieces)] if max_pieces else []
                    out.writelines(" ".join(part) + "\n" for part in parts or [pieces])


# --- fairseq-preprocess ------------------------------------------------------------------------------------------


def fairseq_preprocess(*args):
    """The venv's fairseq-preprocess with these arguments; its console output only on failure (on success
    fairseq's own record of the run is DESTDIR/preprocess.log)."""
    tool = shutil.which("fairseq-preprocess", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    if tool is None:
        raise PrepareError("fairseq-preprocess not found: run `make setup` and use .venv/bin/python")
    done = subprocess.run([tool, *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise PrepareError(f"fairseq-preprocess failed (exit {done.returncode}):\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")


def binarize(bin_dir, runs, workers):
    """Run fairseq-preprocess once per entry of runs ({subfolder of bin_dir: its arguments}, "" for bin_dir
    itself), each with --destdir and --workers added.

    Everything is written into a sibling folder BIN_DIR.tmp that is renamed to bin_dir only when every run has
    succeeded: the scripts take an existing bin_dir for a finished preparation, so it must never be a partial one.
    """
    tmp = bin_dir.with_name(bin_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for subfolder, args in runs.items():
        fairseq_preprocess(*args, "--destdir", tmp / subfolder, "--workers", workers)
    os.replace(tmp, bin_dir)


def binarize_translation(bpe_dir, bin_dir, workers):
    """BPE_DIR/{train,valid,test}.{en,fr} -> bin_dir for fairseq's translation task, with one dictionary for both
    languages (--joined-dictionary: the joint BPE's pieces are shared, and so can the embeddings be)."""
    binarize(bin_dir, {"": ["--source-lang", "en", "--target-lang", "fr", "--trainpref", bpe_dir / "train",
                            "--validpref", bpe_dir / "valid", "--testpref", bpe_dir / "test", "--joined-dictionary"]},
             workers)


# --- the recipes' source formats ---------------------------------------------------------------------------------

# GLUE task -> (text columns, label column, dev file name): the GLUE tsv headers.
GLUE_TASKS = {
    "SST-2": (["sentence"], "label", "dev.tsv"),
    "MNLI": (["sentence1", "sentence2"], "gold_label", "dev_matched.tsv"),
    "QNLI": (["question", "sentence"], "label", "dev.tsv"),
    "RTE": (["sentence1", "sentence2"], "label", "dev.tsv"),
    "MRPC": (["#1 String", "#2 String"], "Quality", "dev.tsv"),
    "QQP": (["question1", "question2"], "is_duplicate", "dev.tsv"),
}


def read_glue_tsv(path, task):
    """[(texts, label)] of a GLUE tsv file, its columns found by its header (quotes are text in GLUE files, not
    CSV quoting). SST-2 is also read in the header-less "sentence<TAB>label" form."""
    columns, label_column, _ = GLUE_TASKS[task]
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


_SGML_SEGMENT = re.compile(r"<seg.*?>(.*)</seg>.*?")


def sgml_segments(path):
    """The <seg> texts of a WMT SGML file, in order, read exactly as sacrebleu reads its copy of newstest2014
    (sacrebleu/dataset/fake_sgml.py: the text between the tags, whitespace collapsed, entities left as they are),
    so that BLEU against the text written from them is sacrebleu's wmt14 BLEU."""
    with open(path, encoding="utf-8") as f:
        return [re.sub(r"\s+", " ", _SGML_SEGMENT.sub(r"\1", line).strip()) for line in f if line.startswith("<seg ")]


def encode_pairs(processor, pairs, clean, max_len, ratio):
    """(number of pairs in, [(en pieces, fr pieces)] kept) of sentence pairs encoded with a sentencepiece
    processor; with clean, only the pairs that clean-corpus-n.perl -ratio RATIO ... 1 MAX_LEN keeps (on pieces):
    both sides 1 to max_len pieces, neither side more than ratio times longer than the other. The count comes back
    with the pairs because the WMT script runs this on chunks in a process pool."""
    en, fr = (processor.encode([p[i] for p in pairs], out_type=str) for i in (0, 1))
    kept = [(" ".join(e), " ".join(f)) for e, f in zip(en, fr)
            if not clean or (1 <= len(e) <= max_len and 1 <= len(f) <= max_len
                             and len(e) <= ratio * len(f) and len(f) <= ratio * len(e))]
    return len(pairs), kept


def nonempty_lines(files):
    """The stripped non-empty lines of text files (plain or .gz), one file after the other."""
    for path in files:
        with open_text(path) as f:
            for line in f:
                if line := line.strip():
                    yield line


# A sentence ends at . ! or ? (and any closing quotes or brackets) before a space and a capital, a digit or an
# opening quote: good enough for reviews, where a missed boundary only makes a longer sample.
_SENTENCE_END = re.compile(r"([.!?]+[\"')\]]*)\s+(?=[\"'(\[]?[A-Z0-9])")


def cut_words(text, max_words):
    """text in pieces of at most max_words words (a run-on review without full stops, a pasted list)."""
    words = text.split()
    return [" ".join(words[i:i + max_words]) for i in range(0, len(words), max_words)]


def document_sentences(document, max_words):
    """The sentences of a document on one line (a review), each cut to at most max_words words."""
    return [piece for sentence in _SENTENCE_END.sub("\\1\n", document).split("\n")
            for piece in cut_words(sentence, max_words)]


def split_train_valid(files, text_dir, valid_every, max_lines, added=(), added_repeat=1, samples=None):
    """TEXT_DIR/train.txt and TEXT_DIR/valid.txt from the non-empty lines of files (the first max_lines, 0 = all),
    then all those of the added files: every valid_every-th line is held out for validation. The added files'
    training lines are written added_repeat times, their held-out lines once: more weight for a small text, and
    no validation line among the training ones. Streamed, as a user's corpus may not fit in memory.

    samples(line) gives the lines a line of files becomes (default: itself), e.g. a review's sentences
    (document_sentences): a held-out line is held out whole, so no validation sentence shares a review with a
    training one. The counts are of the lines written."""
    samples = samples or (lambda line: [line])
    text_dir.mkdir(parents=True, exist_ok=True)
    lines = nonempty_lines(files)
    if max_lines:
        lines = itertools.islice(lines, max_lines)
    counts = {"train": 0, "valid": 0}
    with open(text_dir / "train.txt", "w", encoding="utf-8") as train, \
            open(text_dir / "valid.txt", "w", encoding="utf-8") as valid:
        def split(lines, start, repeat, samples):
            index = start
            for index, line in enumerate(lines, start=start + 1):
                held_out = index % valid_every == 0
                if held_out and repeat == 0:
                    kind, out = "valid", valid
                elif not held_out:
                    kind, out = "train", train
                else:
                    continue
                for sample in samples(line):
                    out.write(sample + "\n")
                    counts[kind] += 1
            return index

        end = split(lines, 0, 0, samples)
        for repeat in range(added_repeat):
            split(nonempty_lines(added), end, repeat, lambda line: [line])
    if not counts["valid"]:
        raise PrepareError(f"only {counts['train']} non-empty lines: too few to hold out every {valid_every}th "
                           f"for validation")
    print(f"prepare: {counts['train']:,} training and {counts['valid']:,} validation lines", flush=True)
