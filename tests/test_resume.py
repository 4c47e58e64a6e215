"""Kill a training subprocess at arbitrary moments (SIGKILL, SIGINT), resume it, and get
weights bit-identical to an uninterrupted run, with dropout, every augmentation, per-image
normalisation and the batch-preparing thread on."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import dataset_arrays, write_dataset

SETTINGS = {
    "model.hidden": "[256,128]", "model.dropout": "0.2", "model.input_dropout": "0.1",
    "training.epochs": "3", "training.batch_size": "16", "data.validation": "500",
    "optimizer.name": "adamw", "optimizer.weight_decay": "0.01", "schedule.name": "cosine",
    "schedule.warmup_epochs": "0.5", "augment.shift.p": "0.5", "augment.affine.p": "0.3",
    "augment.elastic.p": "0.3", "augment.invert.p": "0.2", "augment.colors.p": "0.3",
    "augment.noise.p": "0.2", "augment.flip.p": "0.5", "augment.erase.p": "0.3",
    "training.prefetch": "true", "data.normalize": "image",
}


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    write_dataset(root / "data" / "mnist", dataset_arrays(4000, 200, seed=5))
    return root


def command(data_dir, *args):
    sets = [x for k, v in SETTINGS.items() for x in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "mnist_bp", "train", "--data-dir", str(data_dir), *sets,
            "--set", "data.printed=false",
            "--no-report", *args]


def start(cmd, ignore_sigint=False, env=None):
    def ignore():  # what a non-interactive shell does to a background job
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ignore if ignore_sigint else None,
                            env=None if env is None else {**os.environ, **env})


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def arrays(run):
    with np.load(run / "checkpoints" / "last.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if k != "meta"}


@pytest.fixture(scope="module")
def reference(resume_data):
    run = resume_data / "reference"
    code, out, err = finish(start(command(resume_data / "data", "--run-dir", str(run), "-q")))
    assert code == 0, err
    return run


def wait_for(path, timeout=60):
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def resume_and_compare(run, reference, data_dir, env=None):
    code, out, err = finish(start([sys.executable, "-m", "mnist_bp", "train", "--resume",
                                   str(run / "checkpoints" / "last.npz"), "--data-dir",
                                   str(data_dir)], env=env))
    assert code == 0, err
    got, want = arrays(run), arrays(reference)
    assert got.keys() == want.keys()
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert [r[key] for r in rows] == [r[key] for r in ref_rows], key
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_accuracy"] == json.loads((reference / "summary.json").read_text())[
        "test_accuracy"]


@pytest.mark.parametrize("delay", [0.0, 0.37])
def test_sigkill_then_resume_is_bit_identical(resume_data, reference, delay):
    run = resume_data / f"killed-{delay}"
    proc = start(command(resume_data / "data", "--run-dir", str(run), "-q"))
    wait_for(run / "checkpoints" / "last.npz")  # something to resume from
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    code, _, _ = finish(proc)
    assert code == -signal.SIGKILL
    resume_and_compare(run, reference, resume_data / "data")


@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["foreground", "background-job"])
def test_sigint_saves_mid_epoch_then_resume_is_bit_identical(resume_data, reference,
                                                            ignore_sigint):
    run = resume_data / f"interrupted-{ignore_sigint}"
    proc = start(command(resume_data / "data", "--run-dir", str(run)), ignore_sigint)
    wait_for(run / "checkpoints" / "last.npz")  # training is under way: epoch 1 is done
    time.sleep(0.25)  # somewhere inside epoch 2 (an epoch takes ~0.7 s here)
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == 130, err
    ckpt = run / "checkpoints" / "last.npz"
    assert f"resume with: mnist-bp train --resume {ckpt}" in err
    with np.load(ckpt, allow_pickle=False) as npz:
        progress = json.loads(str(npz["meta"]))["progress"]
    assert not progress["finished"] and progress["step_in_epoch"] > 0  # saved mid-epoch
    resume_and_compare(run, reference, resume_data / "data")


def test_sigkill_resume_with_fused_momentum(resume_data):
    """Plain momentum keeps its velocity inside the layers' gradient buffers (the fused fast
    path): it must survive a kill and resume bit-exactly too."""
    extra = ["--set", "optimizer.name=momentum", "--set", "optimizer.learning_rate=0.01",
             "--set", "optimizer.weight_decay=0.001"]
    reference = resume_data / "momentum-reference"
    code, _, err = finish(start(command(resume_data / "data", "--run-dir", str(reference), "-q",
                                        *extra)))
    assert code == 0, err
    run = resume_data / "momentum-killed"
    proc = start(command(resume_data / "data", "--run-dir", str(run), "-q", *extra))
    wait_for(run / "checkpoints" / "last.npz")
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    resume_and_compare(run, reference, resume_data / "data")


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_onednn_products_resume_bit_identically(resume_data, precision):
    """oneDNN's GEMMs (and bfloat16 rounding, which keeps no state between steps) resume as
    exactly as numpy's: SIGKILL mid-run, resume, the same weights as an uninterrupted run."""
    from mnist_bp.nn import onednn

    if onednn.library() is None:
        pytest.skip("oneDNN is not installed (pip install 'mnist-bp[fast]')")
    if precision == "bfloat16" and not onednn.cpu_has_bf16():
        pytest.skip("bfloat16 products need a CPU with AVX512_BF16 or AMX (elsewhere training "
                    "is float32, which the float32 case tests)")
    env = {"MNIST_BP_GEMM": "onednn"}
    extra = ["--set", "optimizer.name=momentum", "--set", "optimizer.learning_rate=0.01",
             "--set", f"training.precision={precision}"]
    reference = resume_data / f"onednn-{precision}-reference"
    code, _, err = finish(start(command(resume_data / "data", "--run-dir", str(reference), "-q",
                                        *extra), env=env))
    assert code == 0, err
    assert json.loads((reference / "summary.json").read_text())["products"] == \
        ("onednn-bfloat16" if precision == "bfloat16" else "onednn")
    run = resume_data / f"onednn-{precision}-killed"
    proc = start(command(resume_data / "data", "--run-dir", str(run), "-q", *extra), env=env)
    wait_for(run / "checkpoints" / "last.npz")
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    resume_and_compare(run, reference, resume_data / "data", env=env)
