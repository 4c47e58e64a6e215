"""`mnist-bp tune` on tiny synthetic data: trials, best.yaml, pruning, continuing, two
workers, workers killed at several moments (real processes, SIGKILL), trials planted without
a heartbeat, foreign files, another space, quiet output, and bad inputs."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from mnist_bp.cli import main

optuna = pytest.importorskip("optuna")

BASE = ["--set", "data.validation=100", "--set", "training.epochs=3", "--set",
        "augment.shift.p=0", "--set", "model.dropout=0", "--set", "training.batch_size=32",
        "--set", "data.printed=false"]
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
    assert (out / "study.db").is_file()
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
    study = optuna.create_study(study_name="default", storage=f"sqlite:///{out / 'study.db'}",
                                direction="maximize")
    space_attr = json.dumps({"optimizer.learning_rate": {
        "choices": [0.002, 0.003, 0.004, 0.0000001]}}, sort_keys=True)
    study.set_user_attr("mnist_bp.space", space_attr)
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


FAST = {"MNIST_BP_TUNE_HEARTBEAT": "1,4"}  # a heartbeat a second, dead after 4 s


def start_worker(out, data_dir, space, trials, *extra, env=None):
    return subprocess.Popen([sys.executable, "-m", "mnist_bp",
                             *tune_args(out, data_dir, space, trials, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def test_two_workers_share_one_study(setup):
    tmp, data_dir, space = setup
    out = tmp / "out"
    # trials long enough (6 epochs) that the second worker is up before the first is done
    workers = [start_worker(out, data_dir, space, 6, "--set", "training.epochs=6")
               for _ in range(2)]
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
    # quiet by default: tune's own lines only, no library's log line or warning
    for _, err in outputs:
        assert not [line for line in err.splitlines()
                    if line.startswith(("[W ", "[I ")) or "Warning" in line], err


def test_a_trial_that_ends_while_the_study_is_counted_is_counted_once():
    """Another worker's trial ends between two reads of the study: counted from one read,
    it is running or finished, never neither (which drew one trial too many)."""
    from types import SimpleNamespace

    from optuna.trial import TrialState

    from mnist_bp.tune import trial_counts

    class Study:  # each read sees the other worker's trial one step further on
        reads = iter([TrialState.RUNNING, TrialState.COMPLETE, TrialState.COMPLETE])

        def get_trials(self, deepcopy=False, states=None):
            trials = [SimpleNamespace(state=TrialState.COMPLETE),
                      SimpleNamespace(state=TrialState.PRUNED),
                      SimpleNamespace(state=TrialState.FAIL),
                      SimpleNamespace(state=next(self.reads))]
            return [t for t in trials if states is None or t.state in states]

    assert trial_counts(Study()) == (2, 1)


def wait_until(check, what, proc=None, timeout=120):
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, f"timed out waiting for {what}"
        if proc is not None:
            assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)


def study_states(out):
    study = optuna.load_study(study_name="default", storage=f"sqlite:///{out / 'study.db'}")
    return [t.state.name for t in sorted(study.get_trials(), key=lambda t: t.number)]


@pytest.mark.parametrize("moment", ["before its first epoch", "mid-trial",
                                    "after its first trial"])
def test_a_killed_worker_costs_at_most_the_grace_period(setup, moment):
    """SIGKILL one of two workers at several moments: its trial is FAIL within the grace
    period (found through Optuna's heartbeats by the live worker) and the live worker
    finishes the study."""
    tmp, data_dir, space = setup
    out = tmp / "out"
    victim = start_worker(out, data_dir, space, 3, "--set", "training.epochs=30", env=FAST)
    if moment == "before its first epoch":
        wait_until(lambda: (out / "trials" / "0").is_dir(), "trial 0", victim)
    elif moment == "mid-trial":
        wait_until(lambda: (out / "trials" / "0" / "metrics.jsonl").is_file(), "an epoch",
                   victim)
    else:
        wait_until(lambda: (out / "trials" / "1").is_dir(), "trial 1", victim)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    killed_at = time.monotonic()
    survivor = start_worker(out, data_dir, space, 3, "--set", "training.epochs=2", env=FAST)
    _, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    states = study_states(out)
    dead = 1 if moment == "after its first trial" else 0
    assert states[dead] == "FAIL" and "RUNNING" not in states
    assert f"trial {dead}: its worker stopped (no heartbeat for 4 s); marked FAIL" in err
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == 3
    assert time.monotonic() - killed_at < 120
    # trials.csv is rewritten after every trial: it lists them all, as the study does
    assert [r["state"] for r in rows(out)] == states


def test_a_trial_drawn_without_a_heartbeat_does_not_block(setup):
    """A worker killed between drawing a trial and its first heartbeat leaves a RUNNING trial
    that Optuna's heartbeats never see: failed once older than the grace period."""
    tmp, data_dir, space = setup
    out = tmp / "out"
    assert invoke(*tune_args(out, data_dir, space, 1)).exit_code == 0
    study = optuna.load_study(study_name="default", storage=f"sqlite:///{out / 'study.db'}")
    planted = study.ask()  # no heartbeat, no objective: a worker dead right after drawing
    time.sleep(4.5)
    start = time.monotonic()
    worker = start_worker(out, data_dir, space, 2, env=FAST)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert f"trial {planted.number}: its worker died before its first heartbeat" in err
    assert study_states(out)[planted.number] == "FAIL"
    assert time.monotonic() - start < 60


def test_running_trials_of_live_workers_are_left_alone(setup):
    """A second worker with nothing left to start waits for the first one's trial, and does
    not fail it: it is alive and beating."""
    tmp, data_dir, space = setup
    out = tmp / "out"
    first = start_worker(out, data_dir, space, 1, "--set", "training.epochs=12", env=FAST)
    wait_until(lambda: (out / "trials" / "0" / "metrics.jsonl").is_file(), "an epoch", first)
    second = start_worker(out, data_dir, space, 1, env=FAST)
    outputs = [w.communicate(timeout=300) for w in (first, second)]
    assert [w.returncode for w in (first, second)] == [0, 0], outputs
    assert study_states(out) == ["COMPLETE"] or study_states(out) == ["PRUNED"]


def foreign_files(tmp):
    """Files that are not a study of mnist-bp tune, each as a user might have it."""
    made = {}
    db = tmp / "mine.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE notes (text TEXT)")
        con.execute("INSERT INTO notes VALUES ('my notes')")
    made["an SQLite database of the user's"] = db
    other = tmp / "other-optuna.db"
    optuna.create_study(study_name="theirs", storage=f"sqlite:///{other}")
    made["another tool's Optuna study"] = other
    lines = tmp / "trials.jsonl"
    lines.write_text('{"op_code": 0, "worker_id": "x"}\n{"a": 1}\n')
    made["JSON lines"] = lines
    text = tmp / "notes.txt"
    text.write_text("my notes\n")
    made["text"] = text
    empty = tmp / "empty.db"
    empty.write_bytes(b"")
    made["an empty file"] = empty
    return made


def snapshot(path):
    return path.read_bytes() if path.is_file() else None


def test_foreign_storage_files_are_refused_untouched(setup):
    tmp, data_dir, space = setup
    for what, path in foreign_files(tmp).items():
        before = snapshot(path), path.stat().st_mtime_ns
        result = invoke(*tune_args(tmp / f"out-{path.stem}", data_dir, space, 1, "--storage",
                                   path))
        assert result.exit_code == 1, (what, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: "), (what, lines)
        assert lines[0].endswith("give another --storage, or another --out"), lines
        assert (snapshot(path), path.stat().st_mtime_ns) == before, what
        assert not (tmp / f"out-{path.stem}" / "trials").exists()


def test_a_foreign_file_in_out_is_refused_untouched(setup):
    tmp, data_dir, space = setup
    out = tmp / "out"
    out.mkdir()
    (out / "study.db").write_text("my study notes\n")
    result = invoke(*tune_args(out, data_dir, space, 1))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {out / 'study.db'}: not an SQLite database")
    assert (out / "study.db").read_text() == "my study notes\n"
    # a folder, and a FIFO (reading one would block): refused at once
    for name, make in (("folder", os.mkdir), ("fifo", os.mkfifo)):
        path = tmp / name
        make(path)
        result = invoke(*tune_args(tmp / f"out-{name}", data_dir, space, 1, "--storage", path))
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert f"Error: {path}: " in result.output


def test_another_space_on_the_same_study_is_one_line(setup):
    tmp, data_dir, space = setup
    out = tmp / "out"
    assert invoke(*tune_args(out, data_dir, space, 1)).exit_code == 0
    before = (out / "study.db").read_bytes()
    space.write_text("optimizer.learning_rate: {low: 0.0005, high: 0.02, log: true}\n"
                     "model.hidden: {choices: [[16], [32], [48]]}\n")
    result = invoke(*tune_args(out, data_dir, space, 2))
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {out / 'study.db'}: the study 'default' searches another space "
        "(model.hidden, optimizer.learning_rate); a study's space is fixed: use the same space "
        "file, or start a new study in another --out (with --storage: under another --study "
        "NAME)")
    assert (out / "study.db").read_bytes() == before
    # ...and a shared storage takes the new space under another study name
    result = invoke(*tune_args(tmp / "out2", data_dir, space, 1, "--study", "wider",
                               "--storage", out / "study.db"))
    assert result.exit_code == 0, result.output


def test_a_long_list_of_choices_is_validated_value_by_value(setup):
    tmp, data_dir, space = setup
    choices = ", ".join(str(i) for i in range(1, 20001))
    space.write_text(f"training.batch_size: {{choices: [{choices}]}}\n")
    from mnist_bp.tune import load_space

    loaded = load_space(space, {"data": {"validation": 100}})
    assert len(loaded["training.batch_size"]["choices"]) == 20000
    space.write_text(f"training.batch_size: {{choices: [{choices}, 0]}}\n")
    with pytest.raises(Exception, match="training.batch_size: 0 is out of range"):
        load_space(space, {"data": {"validation": 100}})


def test_verbose_shows_optuna_s_log_lines(setup):
    tmp, data_dir, space = setup
    worker = start_worker(tmp / "out", data_dir, space, 1, "--verbose")
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert any(line.startswith("[I ") for line in err.splitlines()), err


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
    # refused now rather than failing later, inside a trial or in Optuna
    ("model.dropout: {low: 0.0, high: 0.5, step: 1.0e-300}\n", "makes more than 10,000,000"),
    ("data.validation: {choices: [0, 100]}\n", "every value must be above 0"),
    ("augment.erase.min_area: {low: 0.2, high: 0.25}\n"
     "augment.erase.max_area: {low: 0.05, high: 0.19}\n", "first values together"),
    ("optimizer.learning_rate: {low: 0.001, high: 0.01, log: \"false\"}\n",
     "log must be true or false"),
    ("model.hidden: {choices: [[16], [16]]}\n", "choices hold [16] twice"),
    ("training.prefetch: {choices: [false]}\n", "only 1 distinct point(s), fewer than the 2"),
])
def test_bad_space_files_are_one_line(setup, space_text, message):
    tmp, data_dir, space = setup
    space.write_text(space_text)
    result = invoke(*tune_args(tmp / "out", data_dir, space, 2))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert not (tmp / "out").exists()  # refused before anything is made


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


# --- an attacker's review: faults nobody had named ------------------------------------------

def one_line(result, start):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: ") and start in lines[0], lines
    return lines[0]


def pause_outside_a_write(proc, db) -> None:
    """SIGSTOP `proc` at a moment it holds no lock on the SQLite study `db`: a process frozen
    in the middle of a write keeps every other one out of the file until it resumes
    (docs/tune.md), which is not what the test is about. So is one frozen in a read: a
    writer's commit waits for every reader. BEGIN EXCLUSIVE succeeds only when neither is
    held (BEGIN IMMEDIATE, used before, saw writers only)."""
    for _ in range(100):
        proc.send_signal(signal.SIGSTOP)
        try:
            with contextlib.closing(sqlite3.connect(db, timeout=0.2)) as con:
                con.execute("BEGIN EXCLUSIVE")
                con.rollback()
            return
        except sqlite3.OperationalError:
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.05)
    raise AssertionError("the worker held the study's write lock every time")


def test_a_paused_worker_whose_trial_was_failed_drops_its_result(setup):
    """A worker stopped (SIGSTOP) past the grace period has its trial failed by another;
    when it comes back it finishes, says its result is dropped, and exits 0."""
    tmp, data_dir, space = setup
    out = tmp / "out"
    paused = start_worker(out, data_dir, space, 1, "--set", "training.epochs=12", env=FAST)
    wait_until(lambda: (out / "trials" / "0" / "metrics.jsonl").is_file(), "an epoch", paused)
    pause_outside_a_write(paused, out / "study.db")
    try:
        other = start_worker(out, data_dir, space, 1, env=FAST)
        _, err = other.communicate(timeout=120)
        assert other.returncode == 0, err
        assert "trial 0: its worker stopped (no heartbeat for 4 s); marked FAIL" in err
    finally:
        paused.send_signal(signal.SIGCONT)
    _, err = paused.communicate(timeout=120)
    assert paused.returncode == 0, err
    assert "trial 0: marked FAIL by another worker while it ran" in err
    assert "Traceback" not in err
    assert study_states(out) == ["FAIL", "COMPLETE"] or study_states(out) == ["FAIL", "PRUNED"]


def test_storages_and_outs_that_cannot_hold_the_study(setup, monkeypatch):
    tmp, data_dir, space = setup
    monkeypatch.chdir(tmp)  # an empty --out must never mean the working folder
    memory = invoke(*tune_args(tmp / "o1", data_dir, space, 1, "--storage", "sqlite:///:memory:"))
    one_line(memory, "Error: --storage sqlite:///:memory:: an in-memory database")
    assert not (tmp / "o1").exists()
    # a dangling symbolic link as the study file: refused, nothing made where it points
    (tmp / "o2").mkdir()
    (tmp / "o2" / "study.db").symlink_to(tmp / "elsewhere.db")
    one_line(invoke(*tune_args(tmp / "o2", data_dir, space, 1)), "a symbolic link")
    assert not (tmp / "elsewhere.db").exists()
    # an Optuna database with no study but tables of the user's
    theirs = tmp / "theirs.db"
    optuna.create_study(study_name="x", storage=f"sqlite:///{theirs}")
    optuna.delete_study(study_name="x", storage=f"sqlite:///{theirs}")
    with sqlite3.connect(theirs) as con:
        con.execute("CREATE TABLE my_notes (text TEXT)")
    before = theirs.read_bytes()
    one_line(invoke(*tune_args(tmp / "o3", data_dir, space, 1, "--storage", theirs)),
             "holds tables that are not Optuna's (my_notes)")
    assert theirs.read_bytes() == before
    # a URL naming another tool's study with trials
    shared = tmp / "shared.db"
    foreign = optuna.create_study(study_name="foreign", storage=f"sqlite:///{shared}",
                                  direction="maximize")
    foreign.add_trial(optuna.trial.create_trial(value=0.99))
    one_line(invoke(*tune_args(tmp / "o4", data_dir, space, 1, "--storage",
                               f"sqlite:///{shared}", "--study", "foreign")),
             "was not made by mnist-bp tune")
    # a second study in an OUT that holds another's trials
    assert invoke(*tune_args(tmp / "o5", data_dir, space, 1)).exit_code == 0
    one_line(invoke(*tune_args(tmp / "o5", data_dir, space, 1, "--study", "other")),
             "holds the trials of the study 'default'")
    # a user's own best.yaml in OUT, empty names, a long study name
    (tmp / "o6").mkdir()
    (tmp / "o6" / "best.yaml").write_text("mine\n")
    one_line(invoke(*tune_args(tmp / "o6", data_dir, space, 1)), "best.yaml: already exists")
    assert (tmp / "o6" / "best.yaml").read_text() == "mine\n"
    one_line(invoke(*tune_args("", data_dir, space, 1)), "--out: empty")
    assert not (tmp / "study.db").exists()
    one_line(invoke(*tune_args(tmp / "o7", data_dir, space, 1, "--study", "s" * 600)),
             "--study: a name of at most 200")


def test_a_trial_that_diverges_is_failed_and_the_study_goes_on(setup):
    tmp, data_dir, space = setup
    space.write_text("optimizer.learning_rate: {choices: [0.001, 0.002, 1.0e+30]}\n")
    out = tmp / "out"
    result = invoke(*tune_args(out, data_dir, space, 2, "--set", "optimizer.name=sgd"))
    assert result.exit_code == 0, result.output
    states = [r["state"] for r in rows(out)]
    assert states.count("COMPLETE") + states.count("PRUNED") == 2
    if "FAIL" in states:
        assert "marked FAIL" in result.output and "lower optimizer.learning_rate" in \
            result.output


def test_a_bad_data_dir_leaves_no_out(setup, tmp_path):
    tmp, data_dir, space = setup
    result = invoke(*tune_args(tmp / "out", data_dir, space, 1, "--set",
                               "data.validation=100000"))
    one_line(result, "data.validation: 100000 leaves no training images")
    assert not (tmp / "out").exists()


def test_passwords_are_hidden_wherever_they_are_written():
    from mnist_bp.tune import shown_url

    assert shown_url("postgresql://u:secret@host/db") == "postgresql://u:***@host/db"
    assert shown_url("postgresql://u:p@w@host/db") == "postgresql://u:***@host/db"
    assert shown_url("postgresql://host/db?user=u&password=secret&x=1") == \
        "postgresql://host/db?user=u&password=***&x=1"
