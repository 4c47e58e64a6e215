"""The Python API's errors are the CLI's: every `mnist_bp.load` / `train` / `Model` method
raises `mnist_bp.errors.UserError` with one line for what a user can fix (offline, missing
data, bad arrays, bad arguments), never a TypeError or AttributeError from inside."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import mnist_bp
from mnist_bp.data import registry as datasets
from mnist_bp.errors import UserError


@pytest.fixture(scope="module")
def model(trained_run):
    return mnist_bp.load(trained_run / "checkpoints" / "best.npz")


def test_evaluate_offline_is_the_cli_s_line(model, tmp_path, monkeypatch):
    """No data and no reachable mirror (a closed local port): one line, as the CLI says."""
    monkeypatch.setitem(datasets.DATASETS, "mnist", replace(datasets.DATASETS["mnist"],
                                                           mirrors=()))
    monkeypatch.setenv("MNIST_BP_MIRROR", "http://127.0.0.1:9/")
    with pytest.raises(UserError) as err:
        model.evaluate("mnist", data_dir=tmp_path / "empty")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("could not download train-images-idx3-ubyte.gz from any of 1 "
                              "mirror(s)")


@pytest.mark.parametrize("call, message", [
    (lambda m: m.predict(np.zeros((2, 3))), r"images must be \(N, 28, 28\) or \(28, 28\)"),
    (lambda m: m.predict(None), r"images must be \(N, 28, 28\)"),
    (lambda m: m.predict(np.array(["a"])), "images must be an array"),
    (lambda m: m.predict(np.full((28, 28), np.inf)), "NaN or infinite"),
    (lambda m: m.predict(np.zeros((28, 28)), invert="maybe"), "invert must be 'auto'"),
    (lambda m: m.evaluate(split="val"), "split must be 'test' or 'train'"),
    (lambda m: m.evaluate(colors="x"), "colors must be 'normal' or 'random'"),
    (lambda m: m.evaluate(colors="random", seed="x"), "seed must be a whole number"),
    (lambda m: m.evaluate(invert="yes"), "invert must be True or False"),
    (lambda m: m.evaluate("nosuch"), "unknown dataset 'nosuch'"),
    (lambda m: m.export("model.bin"), "cannot tell the format from the suffix"),
    (lambda m: m.explain(np.zeros((1, 2))), r"images must be \(N, 28, 28\)"),
])
def test_model_methods_raise_user_errors(model, call, message):
    with pytest.raises(UserError, match=message) as err:
        call(model)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("call, message", [
    (lambda m, t: mnist_bp.load(None), "checkpoint must be a path"),
    (lambda m, t: mnist_bp.load(123), "checkpoint must be a path"),
    (lambda m, t: mnist_bp.load(t / ("x" * 300 + ".npz")), "check the path|not found"),
    (lambda m, t: mnist_bp.train(123), "config must be a path"),
    (lambda m, t: mnist_bp.train("default", data_dir=123), "data_dir must be a path"),
    (lambda m, t: mnist_bp.train("default", run_dir=123), "run_dir must be a path"),
    (lambda m, t: mnist_bp.train("default", tensorboard="no"), "tensorboard must be True"),
    (lambda m, t: mnist_bp.train("default", training__epochs=object()), "is not a config"),
    (lambda m, t: m.evaluate(data_dir=123), "data_dir must be a path"),
    (lambda m, t: m.evaluate(data_dir="/etc/passwd"), "Not a directory"),
    (lambda m, t: m.export(None), "out must be a path"),
    (lambda m, t: m.export(t / "m.onnx", force="no"), "force must be True or False"),
])
def test_wrong_types_and_paths_are_user_errors(model, tmp_path, call, message):
    with pytest.raises(UserError, match=message):
        call(model, tmp_path)


def test_numpy_values_are_config_values(tmp_path, data_dir):
    run = mnist_bp.train("default", data_dir=data_dir, run_dir=tmp_path / "r",
                         training__epochs=np.int64(1), model__hidden=np.array([8]),
                         data__validation=0, data__printed=False)
    assert run.summary["epochs_run"] == 1
    with open(run.dir / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # a line torn by a crash
    assert [r["epoch"] for r in run.metrics] == [1]


def test_load_and_train_raise_user_errors(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        mnist_bp.load(tmp_path / "none.npz")
    with pytest.raises(UserError, match="config file not found"):
        mnist_bp.train("no-such-config", data_dir=tmp_path)
    with pytest.raises(UserError, match="unknown key"):
        mnist_bp.train("default", data_dir=tmp_path, training__epoch=1)
