"""End to end through the command line on small generated data: train -> evaluate."""

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from conftest import dataset_arrays, reference_probabilities
from mnist_bp import checkpoint
from mnist_bp.cli import main
from mnist_bp.data import registry as datasets
from mnist_bp.errors import UserError

SMALL = ["--set", "model.hidden=[32]", "--set", "augment.shift.p=0", "--set", "model.dropout=0",
         "--set", "training.epochs=3", "--set", "training.batch_size=32",
         "--set", "data.validation=100", "--set", "optimizer.learning_rate=0.003",
         "--no-report"]


def train(tmp_path, data_dir, *extra, run="run"):
    result = CliRunner().invoke(main, ["train", "--set", "data.printed=false",
                                       "--data-dir", str(data_dir), "--run-dir",
                                       str(tmp_path / run), *SMALL, *extra])
    assert result.exit_code == 0, result.output
    return tmp_path / run, result


def test_train_writes_the_run_directory(tmp_path, data_dir):
    run, result = train(tmp_path, data_dir)
    assert sorted(p.name for p in run.iterdir()) == [
        ".mnist-bp-files.json", ".train.lock", "checkpoints", "config.yaml", "metrics.csv",
        "metrics.jsonl", "summary.json"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.npz", "last.npz"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "train_seconds",
                "seconds"} <= set(r)
        assert 0 < r["train_seconds"] <= r["seconds"]
    with open(run / "metrics.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [float(r["train_loss"]) for r in csv_rows] == [r["train_loss"] for r in rows]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and summary["test_accuracy"] > 0.9  # learnable blobs
    best = max(rows, key=lambda r: r["val_acc"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best_val_accuracy"] == best["val_acc"]
    assert summary["total_seconds"] > 0
    assert f"test accuracy {summary['test_accuracy']:.4f}" in result.stdout
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["hidden"] == [32] and cfg["training"]["epochs"] == 3


def test_checkpoint_contents(tmp_path, data_dir):
    run, _ = train(tmp_path, data_dir, "--set", "optimizer.name=momentum")
    with np.load(run / "checkpoints" / "last.npz", allow_pickle=False) as npz:
        names = set(npz.files)
        meta = json.loads(str(npz["meta"]))
    params = {"layers.0.W", "layers.0.b", "layers.1.W", "layers.1.b"}
    assert names == params | {f"optimizer.{p}.velocity" for p in params} | {"meta"}
    assert meta["version"] == checkpoint.VERSION and meta["config"]["model"]["hidden"] == [32]
    assert meta["progress"]["epoch"] == 3 and meta["progress"]["finished"] is True


def test_config_yaml_passes_back_as_config(tmp_path, data_dir):
    run, _ = train(tmp_path, data_dir)
    result = CliRunner().invoke(main, ["train", str(run / "config.yaml"), "--data-dir",
                                       str(data_dir), "--run-dir", str(tmp_path / "again"), "-q"])
    assert result.exit_code == 0, result.output
    a = np.load(run / "checkpoints" / "last.npz")["layers.0.W"]
    b = np.load(tmp_path / "again" / "checkpoints" / "last.npz")["layers.0.W"]
    assert np.array_equal(a, b)  # same config, same seed: the same weights


def test_evaluate_table_and_json(tmp_path, data_dir):
    run, _ = train(tmp_path, data_dir)
    ckpt = str(run / "checkpoints" / "best.npz")
    result = CliRunner().invoke(main, ["evaluate", ckpt, "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"accuracy", "loss", "n", "per_class", "confusion_matrix"} <= set(report)
    summary = json.loads((run / "summary.json").read_text())
    assert report["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert report["n"] == 200 and np.sum(report["confusion_matrix"]) == 200
    assert len(report["per_class"]) == 10
    assert np.trace(report["confusion_matrix"]) / 200 == report["accuracy"]
    # the accuracy of a forward pass computed independently from the checkpoint's arrays
    test = dataset_arrays()
    pred = reference_probabilities(Path(ckpt), test["test_images"]).argmax(axis=1)
    assert report["accuracy"] == np.mean(pred == test["test_labels"])
    table = CliRunner().invoke(main, ["evaluate", ckpt, "--data-dir", str(data_dir)])
    assert f"accuracy    {report['accuracy']:.4f}" in table.stdout
    assert "confusion matrix (rows: true class, columns: predicted class)" in table.stdout


def test_evaluate_invert_reports_transformed_accuracy(tmp_path, data_dir):
    run, _ = train(tmp_path, data_dir)
    ckpt = str(run / "checkpoints" / "best.npz")
    plain = json.loads(CliRunner().invoke(main, ["evaluate", ckpt, "--data-dir", str(data_dir),
                                                 "--json"]).stdout)
    inverted = json.loads(CliRunner().invoke(main, ["evaluate", ckpt, "--data-dir",
                                                    str(data_dir), "--json", "--invert"]).stdout)
    assert inverted["invert"] is True and inverted["accuracy"] < plain["accuracy"] - 0.3
    colors = CliRunner().invoke(main, ["evaluate", ckpt, "--data-dir", str(data_dir), "--json",
                                       "--colors", "random", "--seed", "3"])
    again = CliRunner().invoke(main, ["evaluate", ckpt, "--data-dir", str(data_dir), "--json",
                                      "--colors", "random", "--seed", "3"])
    assert json.loads(colors.stdout)["accuracy"] == json.loads(again.stdout)["accuracy"]
    # the colours are really applied: another seed scores other images, and no seed
    # scores the plain images
    other = [json.loads(CliRunner().invoke(main, ["evaluate", ckpt, "--data-dir", str(data_dir),
                                                  "--json", "--colors", "random", "--seed",
                                                  str(seed)]).stdout)["loss"]
             for seed in (4, 5)]
    assert len({json.loads(colors.stdout)["loss"], *other, plain["loss"]}) == 4


def test_classic_mse_sigmoid_runs_to_a_number(tmp_path, data_dir):
    result = CliRunner().invoke(main, ["train", "classic", "--data-dir", str(data_dir),
                                       "--run-dir", str(tmp_path / "c"), "-q",
                                       "--set", "training.epochs=2"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["test_accuracy"] > 0.9


def test_early_stopping(tmp_path, data_dir):
    run, _ = train(tmp_path, data_dir, "--set", "training.epochs=30", "--set",
                   "training.early_stopping_patience=2")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] < 30 and summary["stop_reason"].startswith("early stopping")
    assert summary["epochs_run"] == summary["best_epoch"] + 2


def test_divergence_stops_without_touching_best(tmp_path, data_dir):
    result = CliRunner().invoke(main, ["train", "--set", "data.printed=false",
                                       "--data-dir", str(data_dir), "--run-dir",
                                       str(tmp_path / "nan"), *SMALL, "--set",
                                       "optimizer.name=sgd", "--set",
                                       "optimizer.learning_rate=1e30"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "lower optimizer.learning_rate (now 1e+30)" in errors[0]
    assert "Warning" not in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "nan" / "checkpoints" / "best.npz").exists()


def test_config_written_before_data_is_loaded_and_removed_after_a_failed_start(tmp_path,
                                                                              monkeypatch):
    """config.yaml is written before the data is loaded; a train that then stops on an error
    before its first epoch (here: kmnist is missing and its only mirror is a closed local
    port) leaves no run directory behind, not even the parents it made."""
    from mnist_bp.data import datadir

    spec = datasets.DATASETS["kmnist"]
    monkeypatch.setitem(datasets.DATASETS, "kmnist", replace(spec, mirrors=()))
    run = tmp_path / "a" / "b" / "run"
    seen = []
    real = datadir.download_dataset

    def download(*args, **kwargs):
        seen.append(sorted(p.name for p in run.iterdir()))
        return real(*args, **kwargs)

    monkeypatch.setattr(datadir, "download_dataset", download)
    result = CliRunner().invoke(main, ["train", "--set", "data.printed=false",
                                       "--data-dir", str(tmp_path / "empty"),
                                       "--run-dir", str(run), "--set", "data.dataset=kmnist",
                                       "--set", "training.epochs=1"],
                                env={"MNIST_BP_MIRROR": "http://127.0.0.1:9/"})
    assert result.exit_code == 1 and "could not download" in result.stderr
    assert "config.yaml" in seen[0]
    assert not (tmp_path / "a").exists()


def test_a_failed_start_keeps_what_was_in_the_folder(tmp_path, monkeypatch, data_dir):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "notes.txt").write_text("my notes")
    result = CliRunner().invoke(main, ["train", "--set", "data.printed=false",
                                       "--data-dir", str(data_dir), "--run-dir",
                                       str(run), *SMALL, "--set", "data.dataset=kmnist"],
                                env={"MNIST_BP_MIRROR": "http://127.0.0.1:9/"})
    assert result.exit_code == 1
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_a_user_s_own_config_yaml_is_refused_untouched(tmp_path, data_dir):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "config.yaml").write_text("# my notes\nseed: 3\n")
    result = CliRunner().invoke(main, ["train", "--set", "data.printed=false",
                                       "--data-dir", str(data_dir), "--run-dir",
                                       str(run), *SMALL])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: {run / 'config.yaml'}: already exists and was not written by this run; it is "
        "left as it is; move it away, or pass another --run-dir")
    assert (run / "config.yaml").read_text() == "# my notes\nseed: 3\n"
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_a_file_changed_under_a_run_is_never_replaced(tmp_path, data_dir):
    """Each file a run writes is recorded; one that is no longer what the run wrote (edited,
    or swapped for a user's) is refused, untouched, when the run would replace it."""
    from mnist_bp import rundir

    run = tmp_path / "r"
    assert CliRunner().invoke(main, ["train", "--set", "data.printed=false",
                                     "--data-dir", str(data_dir), "--run-dir",
                                     str(run), *SMALL]).exit_code == 0
    folder = rundir.RunDir(run)
    assert all(folder.ours(name) for name in rundir.WRITTEN)
    (run / "metrics.csv").write_text("my edited table\n")
    refused = "metrics.csv: already exists and was not written by this run; it is left as it is"
    with pytest.raises(UserError, match=refused), folder.writing(rundir.METRICS_CSV, "w") as f:
        f.write("replaced")
    assert (run / "metrics.csv").read_text() == "my edited table\n"


@pytest.mark.parametrize("damage, message", [
    ("missing", "checkpoint not found"),
    ("truncated", "not a readable checkpoint (truncated or corrupt"),
    ("version", "checkpoint format version 99 is not supported"),
    ("shapes", "'layers.0.W' has shape (784, 16) but the model needs (784, 32)"),
])
def test_bad_checkpoints(tmp_path, data_dir, damage, message):
    run, _ = train(tmp_path, data_dir)
    ckpt = run / "checkpoints" / "last.npz"
    params, optim, meta = checkpoint.load(ckpt)
    if damage == "missing":
        ckpt = run / "checkpoints" / "nope.npz"
    elif damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:5000])
    elif damage == "version":
        meta["version"] = 99
        checkpoint.save(ckpt, params, optim, {k: v for k, v in meta.items()
                                              if k not in ("format",)})
        data = dict(np.load(ckpt))
        data["meta"] = np.array(json.dumps(meta))
        np.savez(ckpt, **data)
    elif damage == "shapes":
        params["layers.0.W"] = params["layers.0.W"][:, :16]
        checkpoint.save(ckpt, params, optim, meta)
    for args in (["evaluate", str(ckpt), "--data-dir", str(data_dir)],
                 ["train", "--resume", str(ckpt), "--data-dir", str(data_dir)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert message in result.stderr and str(ckpt) in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_resume_of_finished_run_says_so(tmp_path, data_dir):
    run, _ = train(tmp_path, data_dir)
    before = (run / "metrics.jsonl").read_text()
    result = CliRunner().invoke(main, ["train", "--resume", str(run / "checkpoints/last.npz"),
                                       "--data-dir", str(data_dir)])
    assert result.exit_code == 0
    assert "already finished after 3 epoch(s)" in result.stderr
    assert (run / "metrics.jsonl").read_text() == before


def test_checkpoint_round_trip(tmp_path):
    params = {"layers.0.W": np.arange(6, dtype=np.float32).reshape(2, 3),
              "layers.0.b": np.array([1, 2, 3], np.float32)}
    optim = {"layers.0.W.m": np.ones((2, 3), np.float32)}
    meta = {"note": "é", "config": {}, "progress": {"epoch": 4},
            "normalization": {"mean": 0.0, "std": 1.0, "per_image": False}}
    checkpoint.save(tmp_path / "c.npz", params, optim, meta)
    p2, o2, meta = checkpoint.load(tmp_path / "c.npz")
    assert all(np.array_equal(params[k], p2[k]) and p2[k].dtype == np.float32 for k in params)
    assert np.array_equal(o2["layers.0.W.m"], optim["layers.0.W.m"])
    assert meta["progress"]["epoch"] == 4 and meta["note"] == "é"
    assert meta["version"] == checkpoint.VERSION
    assert not list(tmp_path.glob(".*tmp"))


def test_batches_prepared_ahead_equal_batches_prepared_inline(small_arrays):
    """The worker thread that prepares batch step + 1 while step trains gives the very same
    batches, augmentation included, as preparing them in the training thread; a stop in the
    middle of an epoch leaves no batch half-written behind."""
    from mnist_bp import rng
    from mnist_bp.config import load_config
    from mnist_bp.data.batches import Normalizer
    from mnist_bp.data.cache import Split
    from mnist_bp.training import Trainer

    cfg, _ = load_config("mnist-robust", ["training.batch_size=32", "model.hidden=[16]",
                                          "augment.flip.p=0.5", "augment.erase.p=0.5",
                                          "training.prefetch=true"])
    train = Split(small_arrays["train_images"], small_arrays["train_labels"])
    trainer = Trainer(cfg, train, None, Normalizer())
    assert trainer.prefetch  # augmentation on: batches are prepared ahead
    order = rng.stream(0, rng.SHUFFLE, 3).permutation(len(train))

    def collect(prefetch, first=0):
        trainer.prefetch = prefetch
        return [(step, x.copy(), y.copy()) for step, (x, y) in trainer.batches(order, 3, first)]

    inline, ahead = collect(False), collect(True)
    steps = list(range(trainer.steps_per_epoch))
    assert [s for s, _, _ in ahead] == steps == [s for s, _, _ in inline]
    for (_, x1, y1), (_, x2, y2) in zip(inline, ahead, strict=True):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(inline[0][1], inline[1][1])
    resumed = collect(True, first=5)  # a resumed epoch starts mid-way, same batches
    assert all(np.array_equal(x, inline[s][1]) for s, x, _ in resumed)
    trainer.prefetch = True
    batches = trainer.batches(order, 3, 0)
    next(batches)
    batches.close()  # what train_epoch does on a stop: waits for the batch in flight
    for name, sets in (("bench", ["training.prefetch=true"]), ("mnist-robust", [])):
        assert not Trainer(load_config(name, sets)[0], train, None, Normalizer()).prefetch


def test_best_is_linked_to_last_and_survives_the_next_epoch(tmp_path):
    """last.npz is made from best.npz without writing the bytes again (a hard link); when
    last.npz is replaced by the next epoch, best.npz keeps its own epoch."""
    import os

    from mnist_bp.fsutil import atomic_copy, atomic_write

    last, best = tmp_path / "last.npz", tmp_path / "best.npz"
    with atomic_write(best) as f:
        f.write(b"epoch 1")
    atomic_copy(best, last)
    assert last.read_bytes() == b"epoch 1" and os.path.samefile(last, best)
    with atomic_write(last) as f:
        f.write(b"epoch 2")
    assert best.read_bytes() == b"epoch 1" and last.read_bytes() == b"epoch 2"
    atomic_copy(last, best)
    assert best.read_bytes() == b"epoch 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz", "last.npz"]


def test_best_is_copied_where_hard_links_fail(tmp_path, monkeypatch):
    from mnist_bp import fsutil

    def no_links(src, dst):
        raise OSError("hard links not supported")

    monkeypatch.setattr(fsutil.os, "link", no_links)
    last, best = tmp_path / "last.npz", tmp_path / "best.npz"
    last.write_bytes(b"epoch 1")
    fsutil.atomic_copy(last, best)
    assert best.read_bytes() == b"epoch 1" and not best.samefile(last)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz", "last.npz"]


def test_a_failed_epoch_write_is_one_clear_error(tmp_path, data_dir, monkeypatch):
    from mnist_bp import training as train_module

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_module.checkpoint, "write", full_disk)
    result = CliRunner().invoke(main, ["train", "--set", "data.printed=false",
                                       "--data-dir", str(data_dir), "--run-dir",
                                       str(tmp_path / "full"), *SMALL])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "could not write epoch 1's checkpoint and metrics (No space left on device)" \
        in errors[0] and "--resume" in errors[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("validation, every, epochs", [(0, 2, 5), (100, 10, 4)])
def test_checkpoint_every(tmp_path, data_dir, monkeypatch, validation, every, epochs):
    """training.checkpoint_every: last.npz (and the metrics) every N epochs and after the
    last; an epoch with a better validation accuracy always writes best.npz. The files at the
    end are those of the last epoch either way."""
    from mnist_bp import training as train_module

    written = []
    original = train_module.write_epoch

    def spy(run_dir, trainer, progress, best):
        written.append(progress.epoch)
        original(run_dir, trainer, progress, best)

    monkeypatch.setattr(train_module, "write_epoch", spy)
    run, _ = train(tmp_path, data_dir, "--set", f"training.checkpoint_every={every}",
                   "--set", f"data.validation={validation}", "--set", f"training.epochs={epochs}")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    if validation:
        accs = [r["val_acc"] for r in rows]
        improved = [e for e in range(1, epochs + 1) if accs[e - 1] > max(accs[:e - 1], default=-1)]
        assert written == sorted(set(improved) | {epochs}) and len(written) < epochs
    else:
        assert written == [2, 4, 5]
    _, _, meta = checkpoint.load(run / "checkpoints" / "last.npz")
    assert meta["progress"]["epoch"] == epochs
    _, _, best = checkpoint.load(run / "checkpoints" / "best.npz")
    summary = json.loads((run / "summary.json").read_text())
    assert best["progress"]["epoch"] == summary["best_epoch"]


def test_a_write_killed_between_record_and_rename_leaves_a_file_the_run_calls_its_own(
        tmp_path, monkeypatch):
    """The new file's stamp is recorded beside the old one's before the rename: whichever
    of the two a killed process leaves under the name, the next write goes on."""
    from mnist_bp import rundir

    folder = rundir.Owned(tmp_path)
    with folder.writing("metrics.csv", "w") as f:
        f.write("epoch 1\n")
    real_replace = rundir.os.replace

    def killed(*args):
        raise SystemExit("killed before the rename")

    monkeypatch.setattr(rundir.os, "replace", killed)
    with pytest.raises(SystemExit), folder.writing("metrics.csv", "w") as f:
        f.write("epoch 2\n")
    monkeypatch.setattr(rundir.os, "replace", real_replace)
    assert (tmp_path / "metrics.csv").read_text() == "epoch 1\n"
    fresh = rundir.Owned(tmp_path)  # as the resumed process sees it
    assert fresh.ours("metrics.csv")
    with fresh.writing("metrics.csv", "w") as f:
        f.write("epoch 2\n")
    assert (tmp_path / "metrics.csv").read_text() == "epoch 2\n"
    assert not list(tmp_path.glob(".metrics.csv.*.tmp"))
