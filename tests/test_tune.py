"""`mnist-bp tune` on tiny synthetic data: trials, best.yaml, pruning, continuing, two
workers, a worker killed mid-trial, and bad inputs."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from mnist_bp.cli import main

optuna = pytest.importorskip("optuna")

BASE = ["--set", "data.validation=100", "--set", "training.epochs=3", "--set",
        "augment.shift.p=0", "--set", "model.dropout=0", "--set", "training.batch_size=32"]
SPACE = """\
optimizer.learning_rate: {low: 0.0005, high: 0.01, log: true}
model.hidden: {choices: [[16], [32], [48]]}
"""


@pytest.fixture
def setup(tmp_path, data_dir):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    return tmp_path, data_dir, space


def tune_args(out, data_dir, space, trials, *extra):
    return ["tune", "default", "--space", str(space), "--trials", str(trials), "--out", str(out),
            "--data-dir", str(data_dir), *BASE, *extra]


def rows(out):
    with open(out / "trials.csv") as f:
        return list(csv.DictReader(f))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_trials_run_and_best_yaml_trains(setup):
    tmp, data_dir, space = setup
    out = tmp / "out"
    result = invoke(*tune_args(out, data_dir, space, 4))
    assert result.exit_code == 0, result.output
    table = rows(out)
    assert [r["number"] for r in table] == ["0", "1", "2", "3"]
    assert list(table[0]) == ["number", "state", "value", "seconds", "optimizer.learning_rate",
                              "model.hidden"]
    assert all(r["state"] in ("COMPLETE", "PRUNED") for r in table)
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0", "1", "2", "3"]
    assert (out / "study.journal").is_file()
    complete = [r for r in table if r["state"] == "COMPLETE"]
    best = max(complete, key=lambda r: float(r["value"]))
    text = (out / "best.yaml").read_text()
    assert f"best trial {best['number']} " in text
    assert f"hidden: {best['model.hidden']}" in text.replace(", ", ",")
    trained = invoke("train", out / "best.yaml", "--data-dir", data_dir, "--run-dir",
                     tmp / "again", "--no-report", "--quiet")
    assert trained.exit_code == 0, trained.output
    assert "test accuracy" in trained.output
    # each trial is an ordinary run scored on validation only
    trial_summary = (out / "trials" / best["number"] / "summary.json").read_text()
    assert '"test_accuracy": null' in trial_summary
    assert f"val_acc {float(best['value']):.4f}" in result.stdout


def test_pruning_stops_a_clearly_worse_trial(setup):
    tmp, data_dir, space = setup
    space.write_text("optimizer.learning_rate: {choices: [0.002, 0.003, 0.004, 0.0000001]}\n")
    out = tmp / "out"
    out.mkdir()
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
    study = optuna.create_study(study_name="default", storage=storage, direction="maximize")
    for lr in (0.002, 0.003, 0.004, 0.0000001):  # three good trials, then a hopeless one
        study.enqueue_trial({"optimizer.learning_rate": lr})
    result = invoke(*tune_args(out, data_dir, space, 4, "--set", "training.epochs=6"))
    assert result.exit_code == 0, result.output
    table = rows(out)
    assert [r["state"] for r in table] == ["COMPLETE"] * 3 + ["PRUNED"]
    pruned_epochs = (out / "trials" / "3" / "metrics.jsonl").read_text().splitlines()
    assert 2 <= len(pruned_epochs) < 6


def test_running_again_continues_the_study(setup):
    tmp, data_dir, space = setup
    out = tmp / "out"
    assert invoke(*tune_args(out, data_dir, space, 2)).exit_code == 0
    first = rows(out)
    result = invoke(*tune_args(out, data_dir, space, 4))
    assert result.exit_code == 0, result.output
    table = rows(out)
    assert [r["number"] for r in table] == ["0", "1", "2", "3"]
    assert table[:2] == first  # the first two trials are the same ones
    assert "trial   2" in result.stdout and "trial   0" not in result.stdout


def start_worker(out, data_dir, space, trials, *extra):
    return subprocess.Popen([sys.executable, "-m", "mnist_bp",
                             *tune_args(out, data_dir, space, trials, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_workers_share_one_study(setup):
    tmp, data_dir, space = setup
    out = tmp / "out"
    workers = [start_worker(out, data_dir, space, 6) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    table = rows(out)
    finished = [r for r in table if r["state"] in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6
    params = [(r["optimizer.learning_rate"], r["model.hidden"]) for r in table
              if r["state"] != "FAIL"]
    assert len(set(params)) == len(params)
    ran = [sum(line.startswith("trial") for line in o.splitlines()) for o, _ in outputs]
    assert all(n >= 1 for n in ran), ran  # both workers did trials


def test_worker_killed_mid_trial_leaves_a_study_another_continues(setup):
    tmp, data_dir, space = setup
    out = tmp / "out"
    slow = ["--set", "training.epochs=200"]
    worker = start_worker(out, data_dir, space, 3, *slow)
    deadline = time.time() + 120
    while not (out / "trials" / "0" / "metrics.jsonl").is_file():
        assert time.time() < deadline and worker.poll() is None
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=30)
    result = invoke(*tune_args(out, data_dir, space, 2))
    assert result.exit_code == 0, result.output
    assert "trial 0: its worker" in result.output and "marked FAIL" in result.output
    table = rows(out)
    assert table[0]["state"] == "FAIL"
    # the dead worker's trial is FAIL; exactly two finished (COMPLETE or PRUNED) trials follow
    assert len(table) == 3
    assert [r["state"] in ("COMPLETE", "PRUNED") for r in table[1:]] == [True, True]
    assert not any(r["state"] == "RUNNING" for r in table)


@pytest.mark.parametrize("space_text, message", [
    ("optimizer.learning_rat: {low: 0.001, high: 0.01}\n",
     "optimizer.learning_rat: unknown config key; did you mean 'optimizer.learning_rate'?"),
    ("optimizer.learning_rate: {low: 0.01, high: 0.001}\n",
     "optimizer.learning_rate: low (0.01) must be below high (0.001)"),
    ("optimizer.learning_rate: {low: 0, high: 0.1, log: true}\n",
     "optimizer.learning_rate: a log range needs low > 0 (it is 0)"),
    ("model.dropout: {low: 0.1, high: 1.5}\n",
     "model.dropout: 1.5 is out of range; allowed: >= 0.0 and < 1.0"),
    ("model.hidden: {choices: []}\n", "model.hidden: choices must be a non-empty list, alone"),
    ("training.epochs: {low: 1.5, high: 4}\n",
     "training.epochs: training.epochs takes whole numbers; low is 1.5"),
    ("model.dropout: {low: 0.1, hi: 0.5}\n", "model.dropout: unknown field 'hi'"),
    ("[1, 2]\n", "a search space maps dotted config keys"),
])
def test_bad_space_files_are_one_line(setup, space_text, message):
    tmp, data_dir, space = setup
    space.write_text(space_text)
    result = invoke(*tune_args(tmp / "out", data_dir, space, 2))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert not (tmp / "out" / "trials").exists()


def test_config_without_validation_is_rejected(setup):
    tmp, data_dir, space = setup
    result = invoke("tune", "default", "--space", space, "--out", tmp / "out", "--data-dir",
                    data_dir)
    assert result.exit_code == 1
    assert result.output == ("Error: default: data.validation is 0, but tune scores trials on "
                             "a validation split; add --set data.validation=1000 (images held "
                             "out of the training files)\n")


def test_without_optuna_one_line(setup, monkeypatch):
    tmp, data_dir, space = setup
    monkeypatch.setitem(sys.modules, "optuna", None)
    result = invoke(*tune_args(tmp / "out", data_dir, space, 2))
    assert result.exit_code == 1
    assert result.output == ("Error: tune needs optuna; install the tune extra: pip install "
                             "'mnist-bp[tune]' (optuna)\n")
