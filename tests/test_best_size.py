"""fairseq_ext.analysis.best_size: the learned check and the best-size verdict, on fairseq --log-file JSON logs."""
import json

from fairseq_ext.analysis.best_size import best_per_update, best_size_lines, check_models
from fairseq_ext.analysis.training_run import read_training_runs


def write_run(root, name, params, wps, valid):
    """A run folder as the recipes leave it: train.log (fairseq's --log-file records) and meta.json.
    valid: [(updates, valid_loss)]; train_inner records every 5 updates at 2 updates/s."""
    folder = root / "train" / name
    folder.mkdir(parents=True)
    last = valid[-1][0]
    lines = []
    for updates in range(5, last + 1, 5):
        lines.append({"epoch": 1, "loss": "9.0", "wps": str(wps), "num_updates": str(updates),
                      "train_wall": str(updates // 2), "wall": str(updates / 2)})
        lines += [{"epoch": 1, "valid_loss": str(loss), "valid_num_updates": str(u)} for u, loss in valid
                  if u == updates]
    (folder / "train.log").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (folder / "meta.json").write_text(json.dumps({"name": name, "params": params, "words_per_s": wps}))
    return folder / "train.log"


def dense(model, params, bleu):
    return {"model": model, "params": params, "method": "dense", "metric": "bleu", "value": bleu,
            "higher_is_better": True}


def runs_of(tmp_path):
    logs = [write_run(tmp_path, "small", 1_000_000, 4000.0, [(25, 7.0), (50, 6.0), (75, 5.5), (100, 5.2)]),
            write_run(tmp_path, "mid", 4_000_000, 2000.0, [(25, 6.5), (50, 5.4)]),
            write_run(tmp_path, "large", 16_000_000, 800.0, [(10, 6.0), (20, 5.3), (30, 5.6)])]
    return read_training_runs(logs)


def test_a_model_under_the_bleu_floor_has_not_learned(tmp_path):
    records = [dense("small", 1_000_000, 31.5), dense("mid", 4_000_000, 35.0), dense("large", 16_000_000, 4.2)]
    checks = {c.name: c for c in check_models(runs_of(tmp_path), records)}
    assert [checks[n].learned for n in ("small", "mid", "large")] == [True, True, False]
    assert checks["large"].why == "bleu 4.2 < 10: has not learned"


def test_best_per_update_compares_at_the_last_update_every_run_reached(tmp_path):
    # Every run reached update 30: small has 7.0 (at 25), mid 6.5 (at 25), large 5.6 (at 30).
    assert best_per_update(runs_of(tmp_path), "valid_loss") == ("large", 30)


def test_best_size_is_the_best_learned_model_and_the_gpu_line_points_to_the_best_per_update(tmp_path):
    runs = runs_of(tmp_path)
    records = [dense("small", 1_000_000, 31.5), dense("mid", 4_000_000, 35.0), dense("large", 16_000_000, 30.0)]
    lines = best_size_lines(runs, records, check_models(runs, records))
    assert lines[0] == "**Best size for this budget on this machine: mid** (uncompressed bleu 35)."
    assert "a step of large cost 5x one of small (800 vs 4000 train words/s) for 16x the parameters" in lines[1]
    assert lines[1].endswith("the best size moves up from mid towards large or beyond (the largest size swept).")


def test_models_that_did_not_learn_take_no_part_in_the_verdict(tmp_path):
    runs = runs_of(tmp_path)
    records = [dense("small", 1_000_000, 31.5), dense("mid", 4_000_000, 3.0), dense("large", 16_000_000, 2.0)]
    lines = best_size_lines(runs, records, check_models(runs, records))
    assert lines == ["**Best size for this budget on this machine: small** (uncompressed bleu 31.5)."]
