"""`tune` across machines, for real: two workers share one study on a PostgreSQL server
(Debian's `postgresql`, started here on a temporary data directory and a local port) over a
plain `postgresql://` URL, and a worker that died on another host is found through Optuna's
own RDB heartbeats, its trial marked FAIL, and the study finishes."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg", reason="the PostgreSQL driver (psycopg 3) is not installed")

SPACE = "optimizer.learning_rate: {low: 0.0005, high: 0.005, log: true}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bin_dir = Path(found[-1]).parent
    as_user: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="mnist-bp-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as its own user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        shutil.chown(home, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = home / "data", free_port()

    def run(*cmd):
        return subprocess.run([*as_user, *map(str, cmd)], capture_output=True, text=True,
                              timeout=120)

    init = run(bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    if init.returncode != 0:
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    start = run(bin_dir / "pg_ctl", "-D", data, "-w", "-l", home / "log", "-o",
                f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    if start.returncode != 0:
        pytest.skip(f"PostgreSQL did not start: {(home / 'log').read_text()[-300:]}")
    try:
        made = run(bin_dir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
                   "mnistbp")
        assert made.returncode == 0, made.stderr
        url = f"postgresql://postgres@127.0.0.1:{port}/mnistbp"
        optuna.storages.RDBStorage(url)  # the tables, once, before workers race for them
        yield url
    finally:
        run(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


def worker(out: Path, url: str, data_dir: Path, space: Path, trials: int, study: str,
           env=None, epochs: int = 2) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_bp", "tune", "default", "--space", str(space),
         "--trials", str(trials), "--storage", url, "--study", study, "--out", str(out),
         "--data-dir", str(data_dir), "--set", "data.validation=100", "--set",
         f"training.epochs={epochs}", "--set", "model.hidden=[16]", "--set",
         "data.printed=false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})})


def states(url: str, study: str) -> list[str]:
    loaded = optuna.load_study(study_name=study, storage=url)
    return [t.state.name for t in sorted(loaded.get_trials(), key=lambda t: t.number)]


def test_two_workers_share_one_study_over_postgresql(postgres_url, tmp_path, data_dir):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    # trials long enough (6 epochs) that the second worker is up before the first is done
    workers = [worker(tmp_path / f"w{k}", postgres_url, data_dir, space, 6, "shared",
                      epochs=6) for k in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    finished = [s for s in states(postgres_url, "shared") if s in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6
    assert all("postgres@" not in o or "***" not in o for o in outputs)
    # each worker ran trials, and each one's trials.csv lists every worker's trials
    for k in range(2):
        assert list((tmp_path / f"w{k}" / "trials").iterdir())
        rows = (tmp_path / f"w{k}" / "trials.csv").read_text().splitlines()[1:]
        assert len([r for r in rows if ",COMPLETE," in r or ",PRUNED," in r]) >= 3


def test_a_worker_dead_on_another_host_is_failed_through_heartbeats(postgres_url, tmp_path,
                                                                    data_dir):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    # A worker on another machine: it started a trial, beat once, and died.
    study = optuna.create_study(study_name="orphan", storage=optuna.storages.RDBStorage(
        postgres_url, heartbeat_interval=1, grace_period=4), direction="maximize",
        load_if_exists=True)
    from mnist_bp.tune import SPACE_ATTR, load_space, space_record

    # a study of mnist-bp's (its space recorded, as its first worker records it)
    study.set_user_attr(SPACE_ATTR, space_record(load_space(space, {"data": {
        "validation": 100}})))
    dead = study.ask()
    dead.set_user_attr("host", "another-host")
    dead.set_user_attr("pid", 4242)
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(1)
    fast = {"MNIST_BP_TUNE_HEARTBEAT": "1,4"}
    start = time.monotonic()
    workers = [worker(tmp_path / f"w{k}", postgres_url, data_dir, space, 2, "orphan", fast)
               for k in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert time.monotonic() - start < 240
    found = states(postgres_url, "orphan")
    assert found[0] == "FAIL"  # the dead worker's trial
    assert sum(s in ("COMPLETE", "PRUNED") for s in found) == 2
    assert "RUNNING" not in found
