"""Gradient checks: every layer, activation and loss, and the whole MLP, against central
differences in float64 (relative error < 1e-6), over a few seeded random shapes."""

from dataclasses import replace

import numpy as np
import pytest

from mnist_bp.config import ModelConfig
from mnist_bp.nn.activations import GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from mnist_bp.nn.layers import Dropout, Linear
from mnist_bp.nn.losses import MSE, SoftmaxCrossEntropy
from mnist_bp.nn.mlp import MLP

H = 1e-6
SHAPES = [(3, 4, 5), (5, 7, 2), (1, 3, 3)]


def rel_error(a, b):
    """||a - b|| / (||a|| + ||b||): an elementwise ratio would be ruled by entries near 0."""
    return np.linalg.norm(a - b) / max(1e-12, np.linalg.norm(a) + np.linalg.norm(b))


def numeric_grad(f, x):
    """Central differences of scalar f() w.r.t. every entry of x (changed in place)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + H
        plus = f()
        x[i] = old - H
        minus = f()
        x[i] = old
        grad[i] = (plus - minus) / (2 * H)
    return grad


def away_from_kinks(rng, shape):
    """Inputs with |x| >= 0.1 so ReLU-like kinks are never straddled by +-H."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.1, 0.1 * np.sign(x) + x, x)


def check_layer(layer, x, rng, fresh_rng=None):
    """Gradient w.r.t. the input and every parameter of `layer` under L = sum(out * w)."""
    def run(xx):
        return layer.forward(xx, True, fresh_rng() if fresh_rng else None)

    w = rng.standard_normal(run(x).shape)
    loss = lambda: float(np.sum(run(x) * w))  # noqa: E731
    run(x)
    dx = layer.backward(w.copy())
    assert rel_error(dx, numeric_grad(loss, x)) < 1e-6
    for name, p in layer.params.items():
        run(x)
        layer.backward(w.copy())
        analytic = layer.grads[name].copy()
        assert rel_error(analytic, numeric_grad(loss, p)) < 1e-6, name


@pytest.mark.parametrize("n, d_in, d_out", SHAPES)
def test_linear(n, d_in, d_out):
    rng = np.random.default_rng(n)
    layer = Linear(d_in, d_out, rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(d_out)
    check_layer(layer, rng.standard_normal((n, d_in)), rng)


@pytest.mark.parametrize("make", [ReLU, lambda: LeakyReLU(0.1), Tanh, Sigmoid, GELU],
                         ids=["relu", "leaky_relu", "tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("n, d, _", SHAPES)
def test_activation(make, n, d, _):
    rng = np.random.default_rng(d)
    check_layer(make(), away_from_kinks(rng, (n, d)), rng)


def test_relu_float32_exact():
    """float32 ReLU: forward np.maximum(x, 0) and backward g * (x > 0), bit for bit, with
    zeros of both signs, subnormals, infinities and NaN, and again at a smaller and a larger
    batch (the layer's zeros are one array, viewed at each shape and grown when needed)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 33)).astype(np.float32)
    special = [0.0, 1e-45, -1e-45, 1e-38, -1e-38, np.inf, -np.inf, 3.0, -3.0, -0.0, np.nan]
    x.flat[:len(special)] = special
    g = rng.standard_normal(x.shape).astype(np.float32)
    relu = ReLU()
    out = relu.forward(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.view(np.int32), np.maximum(x, 0).view(np.int32))
    dx = relu.backward(g)
    np.testing.assert_array_equal(dx.view(np.int32), (g * (x > 0)).view(np.int32))
    assert dx[0, 0] == 0 and dx[0, 1] == g[0, 1] and dx[0, 2] == 0  # 0, +tiny, -tiny
    small = x[:7, :5] * np.float32(-2)
    np.testing.assert_array_equal(relu.forward(small).view(np.int32),
                                  np.maximum(small, 0).view(np.int32))
    np.testing.assert_array_equal(relu.forward(x).view(np.int32), np.maximum(x, 0).view(np.int32))
    big = np.concatenate([x, -x])
    np.testing.assert_array_equal(relu.forward(big).view(np.int32),
                                  np.maximum(big, 0).view(np.int32))


@pytest.mark.parametrize("n, d, _", SHAPES)
def test_dropout_with_fixed_mask(n, d, _):
    rng = np.random.default_rng(7)
    layer = Dropout(0.4)
    check_layer(layer, rng.standard_normal((n, d)), rng, lambda: np.random.default_rng(3))
    # inverted dropout: kept units scaled by 1/(1-p); identity at evaluation
    x = np.ones((200, 50))
    out = layer.forward(x, True, np.random.default_rng(0))
    assert set(np.unique(out)) <= {0.0, 1 / 0.6}
    assert abs((out == 0).mean() - 0.4) < 0.02
    assert layer.forward(x, False) is x


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("n, _, k", SHAPES)
def test_softmax_cross_entropy(smoothing, n, _, k):
    rng = np.random.default_rng(k)
    loss_fn = SoftmaxCrossEntropy(smoothing)
    logits = rng.standard_normal((n, k)) * 3
    labels = rng.integers(0, k, n)
    loss_fn.forward(logits, labels)
    analytic = loss_fn.backward().copy()
    assert rel_error(analytic, numeric_grad(lambda: loss_fn.forward(logits, labels), logits)) < 1e-6


def test_cross_entropy_exact_values_and_stability():
    loss_fn = SoftmaxCrossEntropy()
    logits = np.array([[0.0, 0.0], [1000.0, 0.0]])
    assert loss_fn.forward(logits, np.array([0, 1])) == pytest.approx((np.log(2) + 1000) / 2)
    grad = loss_fn.backward()
    assert np.allclose(grad, [[-0.25, 0.25], [0.5, -0.5]])  # (p - onehot) / N
    smooth = SoftmaxCrossEntropy(0.2)
    # uniform logits: loss = log K whatever the smoothing
    assert smooth.forward(np.zeros((1, 4)), np.array([2])) == pytest.approx(np.log(4))


@pytest.mark.parametrize("n, _, k", SHAPES)
def test_mse(n, _, k):
    rng = np.random.default_rng(k + 10)
    loss_fn = MSE()
    a = rng.random((n, k))
    labels = rng.integers(0, k, n)
    loss_fn.forward(a, labels)
    analytic = loss_fn.backward().copy()
    assert rel_error(analytic, numeric_grad(lambda: loss_fn.forward(a, labels), a)) < 1e-6
    assert MSE().forward(np.array([[1.0, 1.0]]), np.array([0])) == pytest.approx(0.5)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu", "leaky_relu"])
@pytest.mark.parametrize("loss_name", ["cross_entropy", "mse"])
def test_whole_mlp(activation, loss_name):
    """Backpropagation through the full network, dropout on (mask fixed by the seed)."""
    rng = np.random.default_rng(0)
    cfg = replace(ModelConfig(), hidden=(6, 5), activation=activation, dropout=0.3,
                  input_dropout=0.2, output_activation="sigmoid" if loss_name == "mse" else "none")
    model = MLP(cfg, rng, input_dim=7, num_classes=4, dtype=np.float64, input_grad=True)
    for p in model.parameters().values():
        p += rng.standard_normal(p.shape) * 0.1  # non-zero biases
    loss_fn = SoftmaxCrossEntropy() if loss_name == "cross_entropy" else MSE()
    x = rng.standard_normal((5, 7))
    labels = rng.integers(0, 4, 5)

    def loss():
        return loss_fn.forward(model.forward(x, True, np.random.default_rng(42)), labels)

    loss()
    dx = model.backward(loss_fn.backward()).copy()
    grads = {k: g.copy() for k, g in model.gradients().items()}
    assert rel_error(dx, numeric_grad(loss, x)) < 1e-6
    for name, p in model.parameters().items():
        assert rel_error(grads[name], numeric_grad(loss, p)) < 1e-6, name


def test_directional_derivative_float32_model():
    """The float32 hot path agrees with a float64 finite difference along a random direction."""
    rng = np.random.default_rng(5)
    model = MLP(replace(ModelConfig(), hidden=(32,)), rng, 784, 10)
    loss_fn = SoftmaxCrossEntropy()
    x = rng.random((16, 784), dtype=np.float32)
    labels = rng.integers(0, 10, 16)
    loss_fn.forward(model.forward(x), labels)
    model.backward(loss_fn.backward())
    params = model.parameters()
    direction = {k: rng.standard_normal(p.shape).astype(np.float32) for k, p in params.items()}
    analytic = sum(float(np.vdot(model.gradients()[k], d)) for k, d in direction.items())
    base = {k: p.astype(np.float64) for k, p in params.items()}
    model64 = MLP(replace(ModelConfig(), hidden=(32,)), rng, 784, 10, dtype=np.float64)

    def loss_at(t):
        model64.load_parameters({k: base[k] + t * direction[k] for k in base})
        return SoftmaxCrossEntropy().forward(model64.forward(x.astype(np.float64)), labels)

    numeric = (loss_at(1e-6) - loss_at(-1e-6)) / 2e-6
    assert abs(analytic - numeric) / abs(numeric) < 1e-3
    for name in ("layers.0.W", "layers.1.b"):
        assert model.gradients()[name].dtype == np.float32


def test_probabilities_of_logits_and_of_sigmoid_outputs():
    from mnist_bp.nn.losses import probabilities

    logits = np.array([[1000.0, 1000.0, 0.0], [0.0, np.log(3.0), 0.0]], np.float32)
    p = probabilities(logits)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [0.2, 0.6, 0.2]], atol=1e-7)
    sig = np.array([[0.2, 0.6, 0.2], [0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(probabilities(sig, sigmoid_outputs=True),
                               [[0.2, 0.6, 0.2], [0.0, 0.0, 0.0]], atol=1e-7)
