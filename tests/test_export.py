"""`mnist-bp export` (ONNX, safetensors), TensorBoard logs and the Python API's doctests."""

from __future__ import annotations

import doctest
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import dataset_arrays, train_small, write_dataset
from mnist_bp.cli import main
from mnist_bp.model import load

ROOT = Path(__file__).resolve().parent.parent
TEST = dataset_arrays()


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# One small network per activation and input normalisation, and the classic sigmoid/MSE one.
VARIANTS = {
    "relu-scale": {"model": {"hidden": [24, 16], "activation": "relu"}},
    "leaky_relu-standardize": {
        "model": {"hidden": [16], "activation": "leaky_relu", "leaky_slope": 0.1},
        "data": {"validation": 100, "normalize": "standardize"}},
    "gelu-image": {"model": {"hidden": [16], "activation": "gelu"},
                   "data": {"validation": 100, "normalize": "image"}},
    "tanh-center": {"model": {"hidden": [16], "activation": "tanh"},
                    "data": {"validation": 100, "normalize": "center"}},
    "sigmoid-classic": {"model": {"hidden": [16], "activation": "sigmoid",
                                  "output_activation": "sigmoid"},
                        "loss": {"name": "mse"}, "optimizer": {"name": "sgd",
                                                               "learning_rate": 3.0},
                        "training": {"epochs": 2, "batch_size": 10}},
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    overrides = {**VARIANTS[request.param]}
    overrides.setdefault("training", {"epochs": 2, "batch_size": 32})
    run = train_small(folder, overrides)
    return run / "checkpoints" / "best.npz"


def test_onnx_gives_mnist_bp_s_probabilities_and_digits(variant, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    result = invoke("export", variant, out)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {out}"
    graph = onnx.load(out)
    onnx.checker.check_model(graph, full_check=True)
    assert [i.name for i in graph.graph.input] == ["images"]
    assert [o.name for o in graph.graph.output] == ["probabilities", "digit"]
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 28, 28]
    props = {p.key: p.value for p in graph.metadata_props}
    model = load(variant)
    assert json.loads(props["classes"]) == list("0123456789")
    assert json.loads(props["config"])["model"]["activation"] == model.cfg.model.activation
    assert "[0, 1]" in graph.doc_string

    images = TEST["test_images"].astype(np.float32) / 255
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probabilities, digits = session.run(None, {"images": images})
    expected = model.probabilities(images)
    assert probabilities.dtype == np.float32 and digits.dtype == np.int64
    assert np.abs(probabilities - expected).max() < 1e-5
    assert np.array_equal(digits, expected.argmax(axis=1))
    # ...so exactly `evaluate`'s accuracy
    scores = model.evaluate(data_dir=variant.parent.parent.parent / "data")
    assert np.mean(digits == TEST["test_labels"]) == scores["accuracy"]
    # one image, and a batch of another size: the batch dimension is dynamic
    assert session.run(None, {"images": images[:1]})[1].shape == (1,)


def test_onnx_is_stamped_with_the_lowest_opset_and_ir_version_its_graph_needs(variant, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import defs, helper

    out = tmp_path / "m.onnx"
    assert invoke("export", variant, out).exit_code == 0
    graph = onnx.load(out)
    [opset] = graph.opset_import
    assert (opset.domain, opset.version) == ("", 13)
    # the lowest opset: some operator of the graph is defined as written only from 13 on
    # (Softmax over one axis, ArgMax, ReduceSum's axes input), and none needs a later one
    since = {n.op_type: defs.get_schema(n.op_type, opset.version).since_version
             for n in graph.graph.node}
    assert max(since.values()) == opset.version
    # the IR version is the lowest that opset needs, not the newest the onnx package knows
    assert graph.ir_version == helper.find_min_ir_version_for(list(graph.opset_import)) == 7
    assert graph.ir_version < onnx.IR_VERSION


def test_onnx_reference_evaluator_agrees_with_onnxruntime(variant, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    out = tmp_path / "m.onnx"
    assert invoke("export", variant, out).exit_code == 0
    images = TEST["test_images"][:200].astype(np.float32) / 255
    ref_probs, ref_digits = ReferenceEvaluator(onnx.load(out)).run(None, {"images": images})
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probs, digits = session.run(None, {"images": images})
    assert ref_probs.dtype == np.float32 and ref_digits.dtype == np.int64
    assert np.abs(ref_probs - probs).max() < 1e-5
    assert np.array_equal(ref_digits, digits)
    assert np.array_equal(digits, load(variant).probabilities(images).argmax(axis=1))


def test_safetensors_round_trip_bit_for_bit(variant, tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    out = tmp_path / "m.safetensors"
    assert invoke("export", variant, out).exit_code == 0
    tensors = st.load_file(str(out))
    with np.load(variant, allow_pickle=False) as npz:
        params = {k: npz[k] for k in npz.files if k.startswith("layers.")}
        meta = json.loads(str(npz["meta"]))
    assert sorted(tensors) == sorted(params)
    assert all(np.array_equal(tensors[k], params[k]) and tensors[k].dtype == params[k].dtype
               for k in params)
    with safe_open(str(out), "np") as f:
        metadata = f.metadata()
    assert json.loads(metadata["config"]) == meta["config"]
    assert json.loads(metadata["normalization"]) == meta["normalization"]


@pytest.fixture(scope="module")
def relu_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("relu")
    return train_small(folder, {"data": {"validation": 100, "normalize": "image"}})


def test_the_docs_pytorch_snippet_gives_the_same_digits(relu_run, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    ckpt = relu_run / "checkpoints" / "best.npz"
    monkeypatch.chdir(tmp_path)
    assert invoke("export", ckpt, "robust.safetensors").exit_code == 0
    page = (ROOT / "docs" / "export.md").read_text()
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "safe_open" in b)
    namespace: dict = {}
    exec(compile(snippet, "docs/export.md", "exec"), namespace)  # the docs' code, as written
    images = torch.from_numpy(TEST["test_images"].astype(np.float32) / 255)
    digits = namespace["net"](namespace["normalise"](images.reshape(-1, 784))).argmax(dim=1)
    expected = load(ckpt).probabilities(images.numpy()).argmax(axis=1)
    assert np.array_equal(digits.numpy(), expected)


def test_export_refusals_are_one_line_and_overwrite_nothing(relu_run, tmp_path):
    ckpt = relu_run / "checkpoints" / "best.npz"
    out = tmp_path / "m.onnx"
    out.write_bytes(b"mine")
    result = invoke("export", ckpt, out)
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {out}: already exists; pass --force to replace it"
    assert out.read_bytes() == b"mine"
    assert invoke("export", ckpt, out, "--force").exit_code == 0
    assert out.read_bytes() != b"mine"

    cases = {
        (tmp_path / "x.bin", ()): f"Error: {tmp_path / 'x.bin'}: cannot tell the format from the "
                                  f"suffix; name it .onnx or .safetensors, or pass --format "
                                  f"onnx|safetensors",
        (tmp_path / "no" / "such" / "dir" / "m.onnx", ()): None,
    }
    for (target, extra), message in cases.items():
        result = invoke("export", ckpt, target, *extra)
        assert result.exit_code == (1 if message else 0), result.output
        if message:
            assert result.output.strip() == message
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"not a zip")
    result = invoke("export", bogus, tmp_path / "b.onnx")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "not a readable checkpoint" in result.output
    assert not (tmp_path / "b.onnx").exists()
    blocker = tmp_path / "a-file"  # a folder that cannot be made: a file has its name
    blocker.write_text("mine")
    result = invoke("export", ckpt, blocker / "m.onnx")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {blocker / 'm.onnx'}: cannot write it")
    assert blocker.read_text() == "mine"


# --- TensorBoard ----------------------------------------------------------------------------

def test_tensorboard_events_equal_metrics_jsonl(tmp_path, data_dir):
    pytest.importorskip("tensorboardX")
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    run = tmp_path / "run"
    result = invoke("train", "--set", "data.printed=false",
                    "--data-dir", data_dir, "--run-dir", run, "--tensorboard",
                    "--set", "model.hidden=[16]", "--set", "training.epochs=3",
                    "--set", "data.validation=100", "--no-report", "--quiet")
    assert result.exit_code == 0, result.output
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"),
                                             size_guidance={"scalars": 0})
    acc.Reload()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    numbers = [k for k in rows[0] if k != "epoch"]
    assert set(numbers) <= set(acc.Tags()["scalars"])
    for key in numbers:
        events = acc.Scalars(key)
        assert [e.step for e in events] == [r["epoch"] for r in rows]
        assert [e.value for e in events] == [float(np.float32(r[key])) for r in rows], key
    assert "layers.0.W" in acc.Tags()["histograms"]


def test_tensorboard_missing_is_one_line(tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    result = invoke("train", "--set", "data.printed=false",
                    "--data-dir", data_dir, "--run-dir", tmp_path / "r",
                    "--tensorboard", "--set", "training.epochs=1", "--quiet")
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: --tensorboard needs tensorboardX; install the "
                                     "tracking extra: pip install 'mnist-bp[tracking]' "
                                     "(tensorboardX)")


# --- the Python API, as docs/api.md shows it -------------------------------------------------

def test_api_doctests(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from test_docs import digit_image

    write_dataset(tmp_path / "data" / "mnist", dataset_arrays())
    digit_image(tmp_path / "seven.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNIST_BP_DATA_DIR", str(tmp_path / "data"))
    failures, tried = doctest.testfile(str(ROOT / "docs" / "api.md"), module_relative=False,
                                       optionflags=doctest.ELLIPSIS)
    assert tried >= 15 and failures == 0


def test_tune_trials_log_to_tensorboard_like_runs(tmp_path, data_dir):
    pytest.importorskip("optuna")
    pytest.importorskip("tensorboardX")
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    space = tmp_path / "space.yaml"
    space.write_text("optimizer.learning_rate: {low: 0.0005, high: 0.005, log: true}\n")
    result = invoke("tune", "default", "--set", "data.printed=false",
                    "--space", space, "--trials", 1, "--data-dir", data_dir,
                    "--out", tmp_path / "out", "--set", "data.validation=100", "--set",
                    "training.epochs=2", "--set", "model.hidden=[16]", "--set",
                    "training.tensorboard=true")
    assert result.exit_code == 0, result.output
    trial = tmp_path / "out" / "trials" / "0"
    acc = event_accumulator.EventAccumulator(str(trial / "tensorboard"))
    acc.Reload()
    rows = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in acc.Scalars("val_acc")] == [float(np.float32(r["val_acc"]))
                                                         for r in rows]
