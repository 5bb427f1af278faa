"""The recipes' data readers, in-process and in milliseconds: GLUE/SST-2 files, WMT SGML, the WMT cleaning rule,
held-out lines of the monolingual text, the shared sentencepiece and binarize steps of the prepare scripts, and
the train log measurements that go into meta.json. Also one prepare script's option checks, as a user meets them."""
import gzip
import io
import json
import tarfile

import pytest

from clitools import run
from fairseq_ext import data_preparation
from fairseq_ext.analysis.training_run import measure_run
from fairseq_ext.data_preparation import (PrepareError, binarize, cut_words, document_sentences, encode_files,
                                          encode_pairs, imdb_files, imdb_task_examples, read_glue_tsv, sgml_segments,
                                          split_train_valid, train_sentencepiece)


def test_sst2_without_a_header_keeps_every_row(tmp_path):
    (tmp_path / "train.tsv").write_text("a fine film\t1\nawful\t0\n")
    assert read_glue_tsv(tmp_path / "train.tsv", "SST-2") == [(["a fine film"], "1"), (["awful"], "0")]


def test_bad_glue_options_are_reported_together(tmp_path):
    proc = run(["scripts/prepare_glue.py", "--task", "RTE", "--out", tmp_path, "--spm", tmp_path / "no.model",
                "--dict", tmp_path / "dict.txt", "--max-examples", "-1"], check=False)
    assert proc.returncode == 2  # argparse's usage error
    error = proc.stderr.strip().splitlines()[-1]
    assert "--spm" in error and "--dict" in error and "--max-examples -1: expected a whole number >= 0" in error
    assert "--task RTE: give its GLUE files with --from DIR" in error


def test_glue_files_are_read_by_their_header(tmp_path):
    (tmp_path / "sst.tsv").write_text('sentence\tlabel\nit "works"\t1\n')
    assert read_glue_tsv(tmp_path / "sst.tsv", "SST-2") == [(['it "works"'], "1")]
    header = "index\tpromptID\tpairID\tgenre\ts1bp\ts2bp\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label"
    row = "0\t1\t2\tgov\tx\tx\tx\tx\tA man sleeps.\tNobody sleeps.\tcontradiction\tcontradiction"
    (tmp_path / "mnli.tsv").write_text(f"{header}\n{row}\n")
    assert read_glue_tsv(tmp_path / "mnli.tsv", "MNLI") == [(["A man sleeps.", "Nobody sleeps."], "contradiction")]


def test_a_glue_file_of_another_task_is_named(tmp_path):
    (tmp_path / "dev.tsv").write_text("question\tsentence\tlabel\nq\ts\tentailment\n")
    with pytest.raises(PrepareError, match="no column sentence1, sentence2"):
        read_glue_tsv(tmp_path / "dev.tsv", "RTE")


def test_sgml_segments_are_read_as_sacrebleu_reads_them(tmp_path):
    from sacrebleu.dataset.fake_sgml import FakeSGMLDataset

    sgml = ('<refset setid="newstest2014" srclang="any">\n<doc docid="1" genre="news">\n<p>\n'
            '<seg id="1"> Deux  espaces &amp; co </seg>\n<seg id="2">L\u2019apostrophe</seg>\n</p>\n</doc>\n')
    (tmp_path / "ref.sgm").write_text(sgml)
    FakeSGMLDataset.__new__(FakeSGMLDataset)._convert_format(str(tmp_path / "ref.sgm"), str(tmp_path / "sacrebleu.txt"))
    assert sgml_segments(tmp_path / "ref.sgm") == (tmp_path / "sacrebleu.txt").read_text().splitlines()
    assert sgml_segments(tmp_path / "ref.sgm") == ["Deux espaces &amp; co", "L\u2019apostrophe"]


def test_cleaning_keeps_what_clean_corpus_n_keeps():
    class Pieces:  # one piece per word
        @staticmethod
        def encode(lines, out_type):
            return [line.split() for line in lines]

    pairs = [("a b", "c d e"), ("a", "b c"), ("", "x"), ("a " * 4, "b " * 4), ("a " * 5, "b " * 5)]
    count, kept = encode_pairs(Pieces, pairs, True, 4, 1.5)
    # ratio 3/2 = 1.5 is kept, 2/1 is not; empty sides and more than 4 pieces are dropped.
    assert count == 5 and kept == [("a b", "c d e"), ("a a a a", "b b b b")]
    assert encode_pairs(Pieces, pairs, False, 4, 1.5)[1][2] == ("", "x")  # the test set is not cleaned


def test_every_nth_line_is_held_out(tmp_path):
    (tmp_path / "text.txt").write_text("".join(f"line {i}\n\n" for i in range(1, 11)))
    split_train_valid([tmp_path / "text.txt"], tmp_path / "out", valid_every=3, max_lines=0)
    assert (tmp_path / "out" / "valid.txt").read_text().split("\n")[:-1] == ["line 3", "line 6", "line 9"]
    assert len((tmp_path / "out" / "train.txt").read_text().splitlines()) == 7


def test_added_text_comes_after_the_first_max_lines_and_is_split_like_the_rest(tmp_path):
    (tmp_path / "text.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    (tmp_path / "task.txt").write_text("task 1\ntask 2\n")
    split_train_valid([tmp_path / "text.txt"], tmp_path / "out", valid_every=3, max_lines=5,
                      added=[tmp_path / "task.txt"])
    assert (tmp_path / "out" / "valid.txt").read_text().splitlines() == ["line 3", "task 1"]
    assert (tmp_path / "out" / "train.txt").read_text().splitlines() == ["line 1", "line 2", "line 4", "line 5",
                                                                         "task 2"]
    # Repeated: the added training lines twice, the held-out one still once and only in validation.
    split_train_valid([tmp_path / "text.txt"], tmp_path / "out", valid_every=3, max_lines=5,
                      added=[tmp_path / "task.txt"], added_repeat=2)
    assert (tmp_path / "out" / "valid.txt").read_text().splitlines() == ["line 3", "task 1"]
    assert (tmp_path / "out" / "train.txt").read_text().splitlines()[-2:] == ["task 2", "task 2"]


def test_task_sentences_are_the_training_inputs_without_labels(tmp_path):
    header = "index\tquestion\tsentence\tlabel"
    (tmp_path / "train.tsv").write_text(f"{header}\n0\tWho?\tHe did.\tentailment\n1\tWhy?\tNo.\tnot_entailment\n")
    (tmp_path / "dev.tsv").write_text(f"{header}\n0\tdev question\tdev sentence\tentailment\n")
    run(["scripts/prepare_glue.py", "--task", "QNLI", "--from", tmp_path, "--sentences", tmp_path / "out" / "q.txt",
         "--max-examples", "1"])
    assert (tmp_path / "out" / "q.txt").read_text() == "Who?\nHe did.\n"  # no label, no dev sentence
    proc = run(["scripts/prepare_glue.py", "--task", "QNLI", "--from", tmp_path, "--sentences", tmp_path / "x.txt",
                "--out", tmp_path / "o"], check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        "--sentences writes only FILE: give it without --out")


def test_a_bpe_without_specials_encodes_line_for_line(tmp_path):
    import sentencepiece as spm

    words = ["low", "lower", "lowest", "new", "newer", "newest", "wide", "wider", "widest", "show", "shower"]
    (tmp_path / "train.txt").write_text("".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(6)) + "\n"
                                                for i in range(200)))
    train_sentencepiece([tmp_path / "train.txt"], tmp_path / "spm", vocab_size=60)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spm.model"))
    # fairseq's dictionary adds bos, eos and pad itself: the pieces hold none of them.
    assert (sp.get_piece_size(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (60, -1, -1, -1)
    (tmp_path / "in.txt").write_text("lowest newer\n\nwide show\n")
    encode_files(tmp_path / "spm.model", [(tmp_path / "in.txt", tmp_path / "out.txt")])
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert lines[1] == "" and [sp.decode(line.split()) for line in lines] == ["lowest newer", "", "wide show"]
    # With max_pieces a longer line becomes several, none longer: no sample outgrows a model's positions.
    (tmp_path / "long.txt").write_text(" ".join(["lowest newer widest"] * 10) + "\nshow\n")
    encode_files(tmp_path / "spm.model", [(tmp_path / "long.txt", tmp_path / "long.bpe")], max_pieces=7)
    pieces = [line.split() for line in (tmp_path / "long.bpe").read_text().splitlines()]
    whole = sp.encode(" ".join(["lowest newer widest"] * 10), out_type=str)
    assert [p for line in pieces[:-1] for p in line] == whole and pieces[-1] == sp.encode("show", out_type=str)
    assert max(len(line) for line in pieces) == 7 and len(pieces) == -(-len(whole) // 7) + 1


def test_binarize_shows_the_folder_only_once_every_run_succeeded(tmp_path, monkeypatch):
    calls = []

    def preprocess(*args):  # writes a dictionary into --destdir; the second call fails while fail is set
        calls.append(args)
        destdir = args[args.index("--destdir") + 1]
        destdir.mkdir(parents=True)
        (destdir / "dict.txt").write_text("a 1\n")
        if fail and len(calls) == 2:
            raise PrepareError("fairseq-preprocess failed (exit 1)")

    monkeypatch.setattr(data_preparation, "fairseq_preprocess", preprocess)
    runs = {"input0": ["--only-source", "--srcdict", "dict.txt"], "label": ["--only-source"]}
    fail = True
    with pytest.raises(PrepareError):
        binarize(tmp_path / "bin", runs, 3)
    assert not (tmp_path / "bin").exists()
    fail = False
    binarize(tmp_path / "bin", runs, 3)  # a rerun starts the temporary folder afresh
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["input0", "label"]
    assert not (tmp_path / "bin.tmp").exists()
    assert calls[-1] == ("--only-source", "--destdir", tmp_path / "bin.tmp" / "label", "--workers", 3)


def test_meta_measures_the_log(tmp_path):
    inner = [{"num_updates": str(u), "wps": wps, "loss": "5"} for u, wps in ((2, "100.0"), (4, "3000.5"), (6, "3100.5"),
                                                                              (8, "2900.5"))]
    lines = ["num. shared model params: 5,665,792 (num. trained: 5,665,792)",
             *(json.dumps(r) for r in inner), json.dumps(inner[-1]),  # a record written twice (2nd epoch handler)
             json.dumps({"epoch": 1, "valid_loss": "4.2", "valid_num_updates": "8"}),
             json.dumps({"epoch": 1, "train_wps": "2500", "train_num_updates": "8", "train_wall": "95"})]
    (tmp_path / "train.log").write_text("\n".join(lines) + "\n")
    meta = measure_run(tmp_path, "transformer_wmt_en_fr_d2_h256", 90, "cpu: 2 cores, fp32")
    # The first interval holds the start-up: the rate is the median of the others.
    assert meta["words_per_s"] == 3000.5 and meta["params"] == 5665792 and meta["updates"] == 8
    assert meta["valid_loss"] == 4.2 and meta["train_wall_s"] == 95 and meta["device"] == "cpu: 2 cores, fp32"


def test_a_model_too_slow_to_log_a_rate_still_gets_one(tmp_path):
    epoch = {"epoch": 1, "train_wps": "0", "train_wpb": "3823", "train_num_updates": "1", "train_train_wall": "35",
             "train_wall": "112"}
    (tmp_path / "train.log").write_text(json.dumps(epoch) + "\n")
    assert measure_run(tmp_path, "arch", 15, "cpu")["words_per_s"] == pytest.approx(3823 / 35)


def test_a_review_becomes_its_sentences_each_cut_to_the_word_limit():
    review = 'I loved it. "Great!" she said. It ran 3 hours (too long). 2 stars... Or not?  Yes ' + "w " * 9
    assert document_sentences(review, max_words=5) == [
        "I loved it.", '"Great!" she said.', "It ran 3 hours (too", "long).", "2 stars...", "Or not?",
        "Yes w w w w", "w w w w w"]
    assert cut_words("a b c", 5) == ["a b c"] and cut_words("a b c d", 2) == ["a b", "c d"]


def test_a_held_out_review_is_held_out_whole(tmp_path):
    (tmp_path / "reviews.txt").write_text("".join(f"Review {i} starts. It ends {i}.\n" for i in range(1, 7)))
    (tmp_path / "task.txt").write_text("task 1\ntask 2\n")
    split_train_valid([tmp_path / "reviews.txt"], tmp_path / "out", valid_every=3, max_lines=0,
                      added=[tmp_path / "task.txt"], samples=lambda line: document_sentences(line, 50))
    valid = (tmp_path / "out" / "valid.txt").read_text().splitlines()
    assert valid == ["Review 3 starts.", "It ends 3.", "Review 6 starts.", "It ends 6."]
    train = (tmp_path / "out" / "train.txt").read_text().splitlines()
    # Reviews 1, 2, 4 and 5 in two sentences each; the added lines (7th and 8th) stay one sample a line.
    assert train[:2] == ["Review 1 starts.", "It ends 1."] and len(train) == 8 + 2
    assert train[-2:] == ["task 1", "task 2"]


def imdb_archive(path):
    """A tiny aclImdb_v1.tar.gz in the real archive's layout."""
    members = {"aclImdb/train/unsup/10_0.txt": "Tenth.<br /><br />Second   line.", "aclImdb/train/unsup/9_0.txt": "Ninth.",
               "aclImdb/train/pos/0_9.txt": "Good.", "aclImdb/train/neg/0_1.txt": "Bad.",
               "aclImdb/test/pos/0_10.txt": "Test good.", "aclImdb/test/neg/0_2.txt": "Test bad.",
               "aclImdb/train/labeledBow.feat": "0 0:1"}
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))


def test_the_imdb_archive_becomes_a_review_per_line_and_pretraining_never_reads_its_test_reviews(tmp_path,
                                                                                                  monkeypatch):
    imdb_archive(tmp_path / "aclImdb_v1.tar.gz")
    monkeypatch.setattr(data_preparation, "IMDB_URL", (tmp_path / "aclImdb_v1.tar.gz").as_uri())
    monkeypatch.setattr(data_preparation, "IMDB_SHA256", data_preparation.sha256(tmp_path / "aclImdb_v1.tar.gz"))
    files = imdb_files(["train_unsup", "train_pos", "test_neg"], dest=tmp_path / "raw")
    read = {split: gzip.open(path, "rt").read() for split, path in files.items()}
    # One review a line, in the order of their ids, HTML line breaks and runs of spaces made single spaces.
    assert read == {"train_unsup": "Ninth.\nTenth. Second line.\n", "train_pos": "Good.\n", "test_neg": "Test bad.\n"}
    # A corrupt archive is refused, with what to give instead.
    monkeypatch.setattr(data_preparation, "IMDB_SHA256", "0" * 64)
    with pytest.raises(PrepareError, match="sha256 mismatch .* give --from DIR"):
        imdb_files(["train_neg"], dest=tmp_path / "raw2")
    # A local copy in that layout is read as it is; what is missing is named.
    with pytest.raises(PrepareError, match="no train_neg.txt.gz in it"):
        imdb_files(["train_unsup", "train_neg"], source=tmp_path / "raw")
    proc = run(["scripts/prepare_mono.py", "--out", tmp_path / "mono", "--from", tmp_path / "raw", "--corpus", "imdb",
                "--vocab-size", "100"], check=False)
    assert proc.returncode != 0 and "no train_neg.txt.gz in it" in proc.output


def test_imdb_classification_trains_on_the_training_reviews_and_scores_on_test_reviews(tmp_path):
    folder = tmp_path / "imdb"
    folder.mkdir()
    for split in ("train_pos", "train_neg", "test_pos", "test_neg"):
        with gzip.open(folder / f"{split}.txt.gz", "wt") as f:
            f.writelines(f"{split} review {i}.\n" for i in range(3))
    examples = imdb_task_examples(folder, dev_per_class=2)
    # Positive ("1") and negative ("0") interleaved; every training review, the first 2 test reviews of each class.
    assert examples["train"][1][:3] == [(["train_pos review 0."], "1"), (["train_neg review 0."], "0"),
                                        (["train_pos review 1."], "1")]
    assert len(examples["train"][1]) == 6
    assert examples["valid"][1] == [(["test_pos review 0."], "1"), (["test_neg review 0."], "0"),
                                    (["test_pos review 1."], "1"), (["test_neg review 1."], "0")]
    proc = run(["scripts/prepare_glue.py", "--task", "IMDB", "--from", folder, "--sentences", tmp_path / "s.txt"],
               check=False)
    assert proc.returncode == 2 and "--task IMDB: its training reviews are the imdb corpus" in proc.stderr
