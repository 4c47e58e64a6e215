"""`explain`: input gradients against central differences and the plain reference
implementation, integrated gradients' completeness, the CLI's files and JSON, the API."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import dataset_arrays, train_small
from mnist_bp.cli import main
from mnist_bp.config import ModelConfig
from mnist_bp.data.batches import Normalizer
from mnist_bp.errors import UserError
from mnist_bp.explain import explain
from mnist_bp.model import load
from mnist_bp.nn import reference
from mnist_bp.nn.mlp import MLP

H = 1e-6
ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "gelu"]
NORMALIZERS = {"scale": Normalizer(), "standardize": Normalizer(0.13, 0.31),
               "center": Normalizer(0.5, 0.5), "image": Normalizer(per_image=True)}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-10k"
TEST = dataset_arrays()


def rel_error(a, b):
    return np.linalg.norm(a - b) / max(1e-12, np.linalg.norm(a) + np.linalg.norm(b))


def small_net(activation: str, sigmoid_outputs=False, d_in=12, seed=0):
    cfg = replace(ModelConfig(), hidden=(7, 5), activation=activation, leaky_slope=0.1,
                  output_activation="sigmoid" if sigmoid_outputs else "none")
    return MLP(cfg, np.random.default_rng(seed), d_in, 10, dtype=np.float64)


def away_from_kinks(x):
    return np.where(np.abs(x) < 0.05, 0.05 * np.sign(x) + x, x)


def unit_images(rng, n, d):
    """Pixels in [0, 1], none at 0 or 1 exactly (no clamp straddled by +-H)."""
    return rng.uniform(0.05, 0.95, (n, d))


# --- the input gradient ----------------------------------------------------------------------

@pytest.mark.parametrize("norm", sorted(NORMALIZERS))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_pixel_gradient_matches_central_differences(activation, norm):
    """d p_target / d pixel through the network (MLP.input_gradient) and the normalisation
    (Normalizer.backward), against central differences of the whole thing, in float64."""
    rng = np.random.default_rng(3)
    net, normalizer = small_net(activation), NORMALIZERS[norm]
    x = unit_images(rng, 3, 12)
    targets = np.array([0, 4, 9])

    def normalise(xx):
        if normalizer.per_image:
            c = xx - xx.mean(axis=1, keepdims=True)
            return c / np.maximum(np.sqrt((c * c).mean(axis=1, keepdims=True)), 1 / 255)
        return (xx - normalizer.mean) / normalizer.std

    def p_target(xx):
        return reference.softmax(net.forward(normalise(xx)))[np.arange(3), targets]

    xn = normalise(x)
    _, d_out = reference.probability_gradient(net.forward(xn), targets)
    analytic = normalizer.backward(x, xn, net.input_gradient(d_out))
    numeric = np.zeros_like(x)
    for j in range(x.shape[1]):
        step = np.zeros_like(x)
        step[:, j] = H
        numeric[:, j] = (p_target(x + step) - p_target(x - step)) / (2 * H)
    assert rel_error(analytic, numeric) < 1e-6


@pytest.mark.parametrize("sigmoid_outputs", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fast_layers_match_the_reference_implementation(activation, sigmoid_outputs):
    """MLP.backward's parameter gradients, MLP.input_gradient and reference.backward agree
    to rounding, and the reference itself matches central differences."""
    rng = np.random.default_rng(5)
    net = small_net(activation, sigmoid_outputs)
    params = {k: v.copy() for k, v in net.parameters().items()}
    x = away_from_kinks(rng.standard_normal((4, 12)))
    w = rng.standard_normal((4, 10))  # L = sum(outputs * w)
    kw = {"activation": activation, "slope": 0.1, "sigmoid_outputs": sigmoid_outputs}
    out, cache = reference.forward(params, x, **kw)
    assert np.allclose(net.forward(x), out, rtol=1e-12, atol=1e-14)
    ref_grads, ref_dx = reference.backward(params, cache, w, **kw)
    net.forward(x)
    net.backward(w.copy())
    for name, g in net.gradients().items():
        assert rel_error(g, ref_grads[name]) < 1e-12, name
    net.forward(x)
    assert rel_error(net.input_gradient(w.copy()), ref_dx) < 1e-12

    def loss():
        return float(np.sum(reference.forward(params, x, **kw)[0] * w))

    for name in ("layers.0.W", "layers.2.b"):
        p, numeric = params[name], np.zeros_like(params[name])
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + H
            plus = loss()
            p[i] = old - H
            numeric[i] = (plus - loss()) / (2 * H)
            p[i] = old
        assert rel_error(ref_grads[name], numeric) < 1e-6, name


def test_input_gradient_changes_no_parameter_gradient():
    net = small_net("relu")
    x = np.random.default_rng(0).standard_normal((3, 12))
    net.forward(x)
    net.backward(np.ones((3, 10)))
    before = {k: g.copy() for k, g in net.gradients().items()}
    net.forward(x)
    net.input_gradient(np.full((3, 10), 5.0))
    assert all(np.array_equal(before[k], g) for k, g in net.gradients().items())


# --- explain on checkpoints -------------------------------------------------------------------

VARIANTS = {
    "relu-scale": {"model": {"hidden": [32, 16]}},
    "gelu-standardize": {"model": {"hidden": [24], "activation": "gelu"},
                         "data": {"validation": 100, "normalize": "standardize"}},
    "tanh-center": {"model": {"hidden": [24], "activation": "tanh"},
                    "data": {"validation": 100, "normalize": "center"}},
    "classic": {"model": {"hidden": [24], "activation": "sigmoid", "output_activation": "sigmoid"},
                "loss": {"name": "mse"}, "optimizer": {"name": "sgd", "learning_rate": 3.0}},
    "relu-image": {"model": {"hidden": [24]}, "data": {"validation": 100, "normalize": "image"}},
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory):
    run = train_small(tmp_path_factory.mktemp(request.param), VARIANTS[request.param])
    return run / "checkpoints" / "best.npz"


def reference_pixel_gradient(ckpt: Path, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """d p_target / d pixel from the checkpoint's arrays alone, in float64, by the reference
    implementation and central-difference-checked normalisation maths."""
    with np.load(ckpt, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        params = {k: npz[k].astype(np.float64) for k in npz.files if k.startswith("layers.")}
    model_cfg = meta["config"]["model"]
    kw = {"activation": model_cfg["activation"], "slope": model_cfg["leaky_slope"],
          "sigmoid_outputs": model_cfg["output_activation"] == "sigmoid"}
    normalizer = Normalizer(**meta["normalization"])
    x = x.astype(np.float64)
    if normalizer.per_image:
        c = x - x.mean(axis=1, keepdims=True)
        xn = c / np.maximum(np.sqrt((c * c).mean(axis=1, keepdims=True)), 1 / 255)
    else:
        xn = (x - normalizer.mean) / normalizer.std
    out, cache = reference.forward(params, xn, **kw)
    _, d_out = reference.probability_gradient(out, targets, kw["sigmoid_outputs"])
    _, d_xn = reference.backward(params, cache, d_out, **kw)
    return normalizer.backward(x, xn, d_xn)


def test_gradient_method_equals_the_reference_implementation(variant):
    model = load(variant)
    images = TEST["test_images"][:20].astype(np.float32) / 255
    e = explain(model, images, method="gradient")
    expected = reference_pixel_gradient(variant, images.reshape(20, -1), e.targets)
    assert e.attributions.dtype == np.float32 and e.attributions.shape == (20, 28, 28)
    assert rel_error(e.attributions.reshape(20, -1), expected) < 1e-5
    assert np.array_equal(e.targets, model.probabilities(images).argmax(axis=1))


def test_integrated_gradients_is_the_midpoint_rule_of_the_reference_gradient(variant):
    model = load(variant)
    if model.normalizer.per_image:
        pytest.skip("integrated gradients are refused for per-image standardisation")
    images = TEST["test_images"][:5].astype(np.float32) / 255
    x = images.reshape(5, -1)
    e = explain(model, images, target=3, steps=8)
    alphas = (np.arange(8) + 0.5) / 8
    mean = sum(reference_pixel_gradient(variant, a * x, np.full(5, 3)) for a in alphas) / 8
    assert rel_error(e.attributions.reshape(5, -1), x * mean) < 1e-5
    assert np.all(e.targets == 3)


def test_integrated_gradients_completeness(variant):
    """The attributions sum to p_target(x) - p_target(blank) within 0.01 at 256 steps."""
    model = load(variant)
    if model.normalizer.per_image:
        pytest.skip("integrated gradients are refused for per-image standardisation")
    images = TEST["test_images"][:50].astype(np.float32) / 255
    e = explain(model, images, steps=256)
    gap = np.abs(e.sums - (e.probabilities - e.baseline_probabilities))
    assert gap.max() < 0.01
    blank_p = model.probabilities(np.zeros((1, 28, 28)))[0]
    assert np.allclose(e.baseline_probabilities, blank_p[e.targets])


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Networks trained briefly on real MNIST, one per normalisation but per-image."""
    if not SHARED.is_dir():
        pytest.skip("needs ../shared/data/mnist-10k")
    from mnist_bp.data.importer import import_from
    from mnist_bp.data.registry import get_dataset

    runs = {}
    for norm in ("scale", "standardize", "center"):
        folder = tmp_path_factory.mktemp(f"real-{norm}")
        import_from(get_dataset("mnist"), SHARED, folder / "data", log=lambda *_: None)
        runs[norm] = train_small(folder, {"data": {"validation": 0, "normalize": norm},
                                          "model": {"hidden": [128]},
                                          "training": {"epochs": 2, "batch_size": 64}})
    return runs


def test_completeness_on_real_test_images(real_runs):
    from mnist_bp.data.datadir import load_dataset

    for norm, run in real_runs.items():
        model = load(run / "checkpoints" / "best.npz")
        test = load_dataset("mnist", run.parent / "data").test
        images = np.asarray(test.images[:100], np.float32) / 255
        e = explain(model, images, steps=256)
        gap = np.abs(e.sums - (e.probabilities - e.baseline_probabilities))
        assert gap.max() < 0.01, norm


def test_per_image_models_show_the_gradient_and_refuse_integrated_gradients(tmp_path):
    run = train_small(tmp_path, VARIANTS["relu-image"])
    model = load(run / "checkpoints" / "best.npz")
    images = TEST["test_images"][:3].astype(np.float32) / 255
    assert np.array_equal(model.explain(images), model.explain(images, method="gradient"))
    with pytest.raises(UserError, match="degenerate .* use method 'gradient'"):
        model.explain(images, method="integrated-gradients")


# --- the API ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def relu_ckpt(tmp_path_factory):
    run = train_small(tmp_path_factory.mktemp("relu"), VARIANTS["relu-scale"])
    return run / "checkpoints" / "best.npz"


@pytest.mark.parametrize("call, message", [
    (lambda m: m.explain(np.zeros((2, 27, 28))), r"\(N, 28, 28\) or \(28, 28\), not \(2, 27, 28\)"),
    (lambda m: m.explain(np.full((28, 28), np.nan)), "NaN or infinite"),
    (lambda m: m.explain("no-such.png"), "no-such.png: "),
    (lambda m: m.explain(np.zeros((28, 28)), target=10), "target must be a digit 0-9"),
    (lambda m: m.explain(np.zeros((28, 28)), steps=0), "steps must be a whole number"),
    (lambda m: m.explain(np.zeros((28, 28)), method="lime"), "unknown method 'lime'"),
    (lambda m: m.explain(np.zeros((28, 28)), baseline=np.zeros(3)), "baseline must be"),
    (lambda m: m.explain([[1, 2], "a"]), "must be an array"),
    (lambda m: m.explain(np.zeros((28, 28)), steps=True), "steps must be a whole number"),
    (lambda m: m.explain(np.zeros((3, 28, 28)), baseline=np.zeros((2, 28, 28))),
     r"baseline must be one image \(28, 28\) or one per image \(3, 28, 28\), not 2"),
    (lambda m: m.explain(np.zeros((1, 28, 28)), baseline=np.full((28, 28), 3e38)),
     "outputs overflow on these baseline .* far outside"),
    (lambda m: m.explain(np.full((1, 28, 28), 3e38)), "outputs overflow on these images"),
    (lambda m: m.explain(np.full((1, 28, 28), 1e39)), "too large for float32"),
    (lambda m: m.explain(np.zeros((1, 28, 28), complex)), "real pixel values"),
    (lambda m: m.explain(np.zeros((1, 28, 28)), method="gradient", baseline=np.zeros((28, 28))),
     "a baseline is used by integrated gradients only"),
    (lambda m: m.explain(np.zeros((28, 28)), invert="maybe"), "invert must be"),
])
def test_api_errors_are_user_errors(relu_ckpt, call, message):
    with pytest.raises(UserError, match=message):
        call(load(relu_ckpt))


def test_api_takes_one_image_a_blank_one_and_another_baseline(relu_ckpt):
    model = load(relu_ckpt)
    image = TEST["test_images"][0].astype(np.float32) / 255
    one = model.explain(image)
    assert one.shape == (1, 28, 28) and one.dtype == np.float32
    assert np.array_equal(model.explain(np.zeros((28, 28))), np.zeros((1, 28, 28)))  # x = base
    e = explain(model, image, baseline=np.full((28, 28), 0.2, np.float32), steps=256)
    assert abs(e.sums[0] - (e.probabilities[0] - e.baseline_probabilities[0])) < 0.01


# --- the command ---------------------------------------------------------------------------------

def png_bytes(u8: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(u8, "L").save(buf, "PNG")
    return buf.getvalue()


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_json_files_and_the_api_agree(relu_ckpt, tmp_path):
    mnist_like = tmp_path / "seven.png"
    mnist_like.write_bytes(png_bytes(TEST["test_images"][0]))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "ex"
    result = invoke("explain", relu_ckpt, mnist_like, bad, "--test", 3, "--data-dir",
                    relu_ckpt.parents[2] / "data", "--out", out, "--json")
    assert result.exit_code == 1
    answer = json.loads(result.stdout)
    assert answer["checkpoint"] == str(relu_ckpt)
    assert answer["method"] == "integrated-gradients"
    assert [e["file"] for e in answer["errors"]] == [str(bad)]
    files = [e["file"] for e in answer["explanations"]]
    assert files == [str(mnist_like), "test-00000", "test-00001", "test-00002"]
    model = load(relu_ckpt)
    images = TEST["test_images"][[0, 0, 1, 2]].astype(np.float32) / 255
    expected = model.explain(images)
    for i, e in enumerate(answer["explanations"]):
        assert set(e) == {"file", "digit", "target", "probability", "baseline_probability",
                          "attribution_sum", "png", "npy"}
        array = np.load(e["npy"], allow_pickle=False)
        assert array.dtype == np.float32 and array.shape == (28, 28)
        assert np.array_equal(array, expected[i])  # the PNG of an MNIST image keeps its pixels
        assert abs(e["attribution_sum"] - float(array.sum(dtype=np.float64))) < 1e-9
        assert e["target"] == e["digit"]
        with Image.open(e["png"]) as picture:
            assert picture.format == "PNG" and picture.size[0] > 2 * 28 * 8
    assert Path(answer["explanations"][1]["npy"]).name == "test-00000.npy"


def test_cli_never_replaces_a_file_and_prints_a_table(relu_ckpt, tmp_path):
    out = tmp_path / "ex"
    out.mkdir()
    (out / "test-00000.png").write_bytes(b"mine")
    args = ("explain", relu_ckpt, "--test", 1, "--data-dir", relu_ckpt.parents[2] / "data",
            "--out", out, "--target", 2, "--method", "gradient")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert (out / "test-00000.png").read_bytes() == b"mine"
    assert (out / "test-00000~2.png").is_file() and (out / "test-00000~2.npy").is_file()
    head, row = result.stdout.splitlines()
    assert head.split()[:4] == ["file", "digit", "target", "p(target)"]
    assert row.split()[0] == "test-00000" and row.split()[2] == "2"
    assert row.endswith(str(out / "test-00000~2.png"))


def test_cli_long_and_odd_names_never_stop_the_others(relu_ckpt, tmp_path):
    """A name longer than a file system takes (in bytes, not characters) is cut at a
    character boundary; the same name three times gets ~2 and ~3; every image is explained."""
    image = png_bytes(TEST["test_images"][0])
    names = ["a.png", "字" * 84 + ".p", "b" * 119 + ".png", "z.png"]
    for i, name in enumerate(names):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / name).write_bytes(image)
    paths = [tmp_path / f"d{i}" / name for i, name in enumerate(names)]
    out = tmp_path / "ex"
    result = invoke("explain", relu_ckpt, *paths, paths[2], paths[2], "--out", out, "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["errors"] == [] and len(answer["explanations"]) == 6
    written = sorted(p.name for p in out.iterdir())
    assert all(len(name.encode()) <= 255 for name in written)
    long_b = "b" * 119
    assert {f"{long_b}.npy", f"{long_b}~2.npy", f"{long_b}~3.npy"} <= set(written)
    assert "a.npy" in written and "z.npy" in written


def test_cli_refusals(relu_ckpt, tmp_path):
    assert "give images to explain, or --test N" in invoke("explain", relu_ckpt).output
    result = invoke("explain", tmp_path / "none.npz", "--test", 1)
    assert result.exit_code == 1 and result.output.count("\n") == 1
