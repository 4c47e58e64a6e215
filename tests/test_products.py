"""The matrix products by oneDNN (float32 and bfloat16) against numpy's, the bfloat16
rounding bit for bit, and what happens where oneDNN or native bfloat16 is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import dataset_arrays, write_dataset
from mnist_bp import precision
from mnist_bp.errors import UserError
from mnist_bp.nn import onednn
from mnist_bp.nn.products import BFloat16Products, NumpyProducts, OneDNNProducts

needs_onednn = pytest.mark.skipif(onednn.library() is None,
                                  reason="oneDNN is not installed (pip install 'mnist-bp[fast]')")
# oneDNN's bfloat16 reorder and GEMM as training uses them: only on CPUs that multiply bfloat16
# natively (elsewhere training is float32, and oneDNN's GEMM refuses bfloat16 or its reference
# reorder drops the sign of -0.0)
needs_bf16 = pytest.mark.skipif(onednn.library() is None or not onednn.cpu_has_bf16(),
                                reason="oneDNN with a CPU that has AVX512_BF16 or AMX")


def rne_reference(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bits, in integers wide enough not to wrap."""
    u = x.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def case(n, d_in, d_out, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in), dtype=np.float32)
    W = rng.standard_normal((d_in, d_out), dtype=np.float32) * 0.1
    g = rng.standard_normal((n, d_out), dtype=np.float32)
    return x, W, g


def run_products(products, x, W, g, beta, training=True):
    out = np.empty((x.shape[0], W.shape[1]), np.float32)
    products.forward(x, W, out, training)
    dW = np.full(W.shape, 0.5, np.float32)
    dx = np.empty_like(x)
    products.backward(x, g, W, dW, beta, dx)
    return out, dW, dx


@needs_onednn
@pytest.mark.parametrize("shape", [(128, 784, 512), (129, 512, 17), (7, 3, 5), (1, 1, 1)])
@pytest.mark.parametrize("beta", [None, 0.9])
def test_onednn_float32_products_match_numpy(shape, beta):
    x, W, g = case(*shape)
    want = run_products(NumpyProducts(), x, W, g, beta)
    got = run_products(OneDNNProducts(), x, W, g, beta)
    for name, a, b in zip(("out", "dW", "dx"), got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * np.abs(b).max(), err_msg=name)
    # beta fuses momentum: dW = x^T g + beta * (what dW held), here 0.5 everywhere
    expected = x.T.astype(np.float64) @ g + (0.0 if beta is None else beta * 0.5)
    np.testing.assert_allclose(got[1], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@needs_bf16
def test_bfloat16_rounds_to_nearest_even_bit_for_bit():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(100_000, dtype=np.float32) * 10.0 ** rng.integers(
        -30, 30, 100_000), np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1.0,
                                     1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -9], np.float32)])
    x = x.astype(np.float32)
    out = np.empty(x.shape, np.uint16)
    onednn.to_bfloat16(x, out)
    np.testing.assert_array_equal(out, rne_reference(x))
    # ties go to even: 1 + 2^-8 sits halfway between 1 and 1 + 2^-7 -> 1 (0x3F80);
    # 1 + 3 * 2^-8 halfway between 1 + 2^-7 and 1 + 2^-6 -> 1 + 2^-6 (0x3F82)
    assert out[-4:].tolist() == [0x3F80, 0x3F80, 0x3F82, 0x3F80]
    assert out[-6] == 0x7F80  # 3.4e38 rounds up past bfloat16's largest finite value: inf
    assert np.isnan(onednn.from_bfloat16(onednn.to_bfloat16(
        np.array([np.nan], np.float32), np.empty(1, np.uint16))))[0]


@needs_bf16
def test_bfloat16_products_are_exact_products_of_rounded_inputs():
    """While training: the products of x, W and g rounded to bfloat16, accumulated in
    float32; at evaluation (training=False) plain float32."""
    x, W, g = case(64, 300, 64, seed=2)
    r = {name: onednn.from_bfloat16(onednn.to_bfloat16(a, np.empty(a.shape, np.uint16)))
         for name, a in (("x", x), ("W", W), ("g", g))}
    out, dW, dx = run_products(BFloat16Products(), x, W, g, beta=0.9)
    f64 = {k: v.astype(np.float64) for k, v in r.items()}
    for got, want in ((out, f64["x"] @ f64["W"]), (dW, f64["x"].T @ f64["g"] + 0.45),
                      (dx, f64["g"] @ f64["W"].T)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # and the rounding is visible: the float32 product differs from the bfloat16 one
    assert np.abs(out - x @ W).max() > 1e-3
    evaluated = np.empty_like(out)
    BFloat16Products().forward(x, W, evaluated, training=False)
    np.testing.assert_allclose(evaluated, x @ W, rtol=2e-5, atol=2e-5)


@needs_onednn
def test_small_products_are_numpys_on_the_same_rounded_inputs():
    """Under MIN_MACS multiply-adds oneDNN's threads cost more than they save: numpy's
    products, bit for bit; in bfloat16 on inputs rounded exactly as oneDNN rounds them."""
    from mnist_bp.nn.products import MIN_MACS

    x, W, g = case(10, 784, 30)
    assert MIN_MACS > 10 * 784 * 30
    want = run_products(NumpyProducts(), x, W, g, 0.9)
    for a, b in zip(run_products(OneDNNProducts(), x, W, g, 0.9), want, strict=True):
        np.testing.assert_array_equal(a, b)
    r = [onednn.from_bfloat16(onednn.to_bfloat16(a, np.empty(a.shape, np.uint16)))
         for a in (x, W, g)]
    want = run_products(NumpyProducts(), *r, 0.9)
    for a, b in zip(run_products(BFloat16Products(), x, W, g, 0.9), want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_numpy_rounding_is_nearest_even_with_subnormals_flushed():
    """round_bfloat16 (small products in bfloat16) on every kind of float32, against integer
    arithmetic wide enough not to wrap; runs on any CPU."""
    from mnist_bp.nn.products import round_bfloat16

    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([bits.view(np.float32),
                        np.array([1e-40, -1e-40, 0.0, -0.0, np.inf, -np.inf, 3.4e38, 1 + 2 ** -8,
                                  1 + 3 * 2 ** -8], np.float32)])
    ours = round_bfloat16(x, np.empty_like(x)).view(np.uint32)
    u = x.view(np.uint32)
    exponent, mantissa = u & 0x7F800000, u & 0x7FFFFF
    want = (rne_reference(x).astype(np.uint32) << 16)
    want[exponent == 0] = u[exponent == 0] & 0x80000000  # zero and subnormals: signed zero
    nan = (exponent == 0x7F800000) & (mantissa != 0)
    assert nan.sum() > 0 and (exponent == 0).sum() > 2
    assert np.isnan(ours[nan].view(np.float32)).all()
    np.testing.assert_array_equal(ours[~nan], want[~nan])
    assert ours[-9:].tolist() == [0, 0x80000000, 0, 0x80000000, 0x7F800000, 0xFF800000,
                                  0x7F800000, 0x3F800000, 0x3F820000]


@needs_bf16
def test_numpy_rounding_matches_onednns_bit_for_bit():
    from mnist_bp.nn.products import round_bfloat16

    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([bits.view(np.float32),  # every kind of float32: NaNs, subnormals, infs
                        rng.standard_normal(10_000, dtype=np.float32),
                        np.array([1e-40, -1e-40, 0.0, -0.0, np.inf, -np.inf, 3.4e38],
                                 np.float32)])
    ours = round_bfloat16(x, np.empty_like(x))
    theirs = onednn.from_bfloat16(onednn.to_bfloat16(x, np.empty(x.shape, np.uint16)))
    nan = np.isnan(theirs)
    np.testing.assert_array_equal(np.isnan(ours), nan)
    np.testing.assert_array_equal(ours.view(np.uint32)[~nan], theirs.view(np.uint32)[~nan])
    assert ours[-7:].view(np.uint32).tolist() == [0, 0x80000000, 0, 0x80000000, 0x7F800000,
                                                  0xFF800000, 0x7F800000]


def test_gemm_choice_reads_the_switch(monkeypatch):
    monkeypatch.setenv("MNIST_BP_GEMM", "numpy")
    assert precision.float32_products() == "numpy"
    assert precision.training_products("float32") == ("numpy", None)
    kind, note = precision.training_products("bfloat16")
    assert kind == "numpy"
    assert note == ("training.precision=bfloat16 needs oneDNN's GEMM, and MNIST_BP_GEMM=numpy: "
                    "training in float32")
    monkeypatch.setenv("MNIST_BP_GEMM", "blas")
    with pytest.raises(UserError, match=r"MNIST_BP_GEMM='blas' is not one of auto, numpy, "
                                        r"onednn; unset it"):
        precision.float32_products()


def test_without_onednn_everything_falls_back_to_numpy(monkeypatch):
    monkeypatch.setattr(onednn, "library", lambda: None)
    monkeypatch.setenv("MNIST_BP_GEMM", "auto")
    assert precision.float32_products() == "numpy"
    kind, note = precision.training_products("bfloat16")
    assert kind == "numpy"
    assert note == ("training.precision=bfloat16 needs oneDNN's GEMM, and oneDNN is not "
                    "installed (pip install 'mnist-bp[fast]'): training in float32")
    monkeypatch.setenv("MNIST_BP_GEMM", "onednn")
    with pytest.raises(UserError, match=r"MNIST_BP_GEMM=onednn but oneDNN is not installed "
                                        r"\(pip install 'mnist-bp\[fast\]'\); unset "
                                        r"MNIST_BP_GEMM to multiply with numpy"):
        precision.float32_products()


AVX512 = "fma avx2 avx512f avx512bw avx512vl avx512dq"  # CPU flags of an AVX-512 CPU
NO_BF16 = "this CPU has no native bfloat16 matrix products (AVX512_BF16 or AMX): " \
          "training in float32"


@needs_onednn
def test_a_cpu_without_bfloat16_trains_in_float32_and_says_so(monkeypatch):
    monkeypatch.setenv("MNIST_BP_GEMM", "auto")
    monkeypatch.setenv("MNIST_BP_FAKE_CPU_FLAGS", AVX512)
    assert precision.training_products("bfloat16") == ("onednn", NO_BF16)
    monkeypatch.setenv("MNIST_BP_FAKE_CPU_FLAGS", AVX512 + " avx512_bf16")
    assert precision.training_products("bfloat16") == ("onednn-bfloat16", None)
    monkeypatch.setenv("MNIST_BP_FAKE_CPU_FLAGS", "fma avx2 amx_bf16")
    assert precision.training_products("bfloat16") == ("onednn-bfloat16", None)
    # without AVX-512 (an AVX2 CPU): numpy multiplies unless oneDNN is asked for by name
    monkeypatch.setenv("MNIST_BP_FAKE_CPU_FLAGS", "fma avx2")
    assert precision.training_products("bfloat16") == ("numpy", NO_BF16)
    assert precision.training_products("float32") == ("numpy", None)
    monkeypatch.setenv("MNIST_BP_GEMM", "onednn")
    assert precision.training_products("float32") == ("onednn", None)
    monkeypatch.setenv("MNIST_BP_FAKE_CPU_FLAGS", "")  # /proc/cpuinfo unreadable
    assert precision.training_products("bfloat16") == ("onednn", NO_BF16)
    monkeypatch.setenv("MNIST_BP_GEMM", "auto")
    assert precision.float32_products() == "numpy"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("products")
    write_dataset(root / "mnist", dataset_arrays(600, 200, seed=3))
    return root


def train(data_dir, run_dir, env, *sets):
    args = [x for s in ("model.hidden=[64]", "training.epochs=2",
                                        "data.printed=false", *sets) for x in ("--set", s)]
    return subprocess.run([sys.executable, "-m", "mnist_bp", "train", "--data-dir",
                           str(data_dir), "--run-dir", str(run_dir), "--no-report", "-q", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def weights(run_dir):
    with np.load(run_dir / "checkpoints" / "last.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if k != "meta"}


@needs_onednn
@pytest.mark.parametrize("precision_name", ["float32", pytest.param("bfloat16",
                                                                     marks=needs_bf16)])
def test_the_same_command_twice_gives_the_same_weights(small_data, tmp_path, monkeypatch,
                                                       precision_name):
    env = {**os.environ, "MNIST_BP_GEMM": "onednn"}
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        proc = train(small_data, run, env, f"training.precision={precision_name}")
        assert proc.returncode == 0, proc.stderr
    a, b = (weights(r) for r in runs)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["products"] == ("onednn-bfloat16" if precision_name == "bfloat16"
                                   else "onednn")


@needs_bf16
def test_bfloat16_learns_as_well_as_numpy_float32(small_data, tmp_path):
    """bfloat16 products (asserted: not a float32 fallback) learn as float32 does."""
    accuracy = {}
    for gemm, prec in (("numpy", "float32"), ("onednn", "bfloat16")):
        run = tmp_path / gemm
        proc = train(small_data, run, {**os.environ, "MNIST_BP_GEMM": gemm},
                     f"training.precision={prec}", "training.epochs=6")
        assert proc.returncode == 0, proc.stderr
        summary = json.loads((run / "summary.json").read_text())
        assert summary["products"] == ("numpy" if gemm == "numpy" else "onednn-bfloat16")
        accuracy[gemm] = summary["test_accuracy"]
    assert accuracy["numpy"] > 0.9
    assert abs(accuracy["onednn"] - accuracy["numpy"]) <= 0.02, accuracy


@needs_onednn
def test_the_fallback_line_is_printed_once_and_training_goes_on(small_data, tmp_path):
    for flags, kind in ((AVX512, "onednn"), ("fma avx2", "numpy")):
        env = {**os.environ, "MNIST_BP_GEMM": "auto", "MNIST_BP_FAKE_CPU_FLAGS": flags}
        run = tmp_path / kind
        proc = train(small_data, run, env, "training.precision=bfloat16")
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.splitlines() == [f"Warning: {NO_BF16}"]
        assert json.loads((run / "summary.json").read_text())["products"] == kind


@needs_bf16
def test_a_bfloat16_checkpoint_is_evaluated_in_float32(small_data, tmp_path, monkeypatch):
    from mnist_bp.model import load

    env = {**os.environ, "MNIST_BP_GEMM": "onednn"}
    proc = train(small_data, tmp_path / "run", env, "training.precision=bfloat16")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["products"] == "onednn-bfloat16"
    monkeypatch.setenv("MNIST_BP_GEMM", "onednn")
    model = load(tmp_path / "run" / "checkpoints" / "best.npz")
    kinds = {linear.products.name for linear in model.network.linears.values()}
    assert kinds == {"onednn"}


def test_a_library_that_is_not_onednn_is_named_with_the_reason(monkeypatch, tmp_path):
    """A file that is no oneDNN 3 (or cannot load: no libgomp) is reported, not taken for
    'not installed', and never crashes the loader."""
    monkeypatch.setattr(onednn, "_LIB", None)
    monkeypatch.setattr(onednn, "_TRIED", False)
    monkeypatch.setattr(onednn, "_ERROR", None)
    libm = next(p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib64/libm.so.6",
                            "/lib64/libm.so.6") if os.path.exists(p))
    monkeypatch.setattr(onednn, "_candidates", lambda: [Path(libm)])
    assert onednn.library() is None
    monkeypatch.setenv("MNIST_BP_GEMM", "onednn")
    with pytest.raises(UserError) as info:
        precision.float32_products()
    assert str(info.value).startswith(f"MNIST_BP_GEMM=onednn but oneDNN {libm} could not be "
                                      f"loaded (")
    assert "undefined symbol: dnnl_sgemm" in str(info.value)


@needs_onednn
def test_gemm_refuses_what_would_corrupt_memory():
    a = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"cannot multiply float64\(4, 3\) and float32"):
        onednn.gemm(a.astype(np.float64), np.ones((3, 2), np.float32), np.empty((4, 2),
                                                                              np.float32))
    with pytest.raises(ValueError, match="cannot multiply"):
        onednn.gemm(a, np.ones((4, 2), np.float32), np.empty((4, 2), np.float32))
    with pytest.raises(ValueError, match="cannot multiply"):
        onednn.gemm(a, np.ones((3, 2), np.float32), np.empty((2, 4), np.float32))
    with pytest.raises(ValueError, match="cannot convert"):
        onednn.to_bfloat16(a, np.empty((3, 4), np.uint16))
    # a layer given uint8 or mismatched inputs leaves them to numpy, which refuses cleanly
    x = np.ones((2000, 784), np.uint8)
    out = np.empty((2000, 64), np.uint8)
    with pytest.raises(TypeError):
        OneDNNProducts().forward(x, np.ones((784, 64), np.float32), out)


def test_a_bad_switch_is_refused_before_the_run_dir_is_made(small_data, tmp_path):
    proc = train(small_data, tmp_path / "run", {**os.environ, "MNIST_BP_GEMM": "blas"})
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("Error: MNIST_BP_GEMM='blas' is not one of auto, numpy, "
                                   "onednn; unset it for the default (oneDNN on CPUs with "
                                   "AVX-512, else numpy)")
    assert not (tmp_path / "run").exists()
