"""Optimizers against updates computed by hand, and schedule values at chosen steps."""

from dataclasses import replace

import numpy as np
import pytest

from mnist_bp.config import OptimizerConfig, ScheduleConfig
from mnist_bp.nn.optimizers import apply_max_norm, clip_grad_norm, make_optimizer
from mnist_bp.nn.schedules import learning_rate

W0 = np.array([[1.0, -2.0]])
B0 = np.array([0.5, 0.25])
GRADS = [(np.array([[0.1, 0.2]]), np.array([1.0, -1.0])),
         (np.array([[-0.3, 0.4]]), np.array([0.5, 0.5])),
         (np.array([[0.2, 0.0]]), np.array([-1.0, 2.0]))]


def run(name, lr=0.1, **kw):
    params = {"layers.0.W": W0.copy(), "layers.0.b": B0.copy()}
    opt = make_optimizer(params, replace(OptimizerConfig(), name=name, learning_rate=lr, **kw))
    for gW, gb in GRADS:
        opt.step(params, {"layers.0.W": gW, "layers.0.b": gb}, lr)
    return params["layers.0.W"], params["layers.0.b"], opt


def test_sgd():
    W, b, _ = run("sgd")
    assert np.allclose(W, W0 - 0.1 * sum(g for g, _ in GRADS))
    assert np.allclose(b, B0 - 0.1 * sum(g for _, g in GRADS))


def test_sgd_weight_decay_on_weights_only():
    W, b, _ = run("sgd", weight_decay=0.5)
    w = W0.copy()
    for g, _ in GRADS:
        w = w - 0.1 * (g + 0.5 * w)
    assert np.allclose(W, w)
    assert np.allclose(b, B0 - 0.1 * sum(g for _, g in GRADS))


def test_momentum_by_hand():
    W, _, opt = run("momentum", momentum=0.9)
    # v1 = g1; v2 = .9 v1 + g2; v3 = .9 v2 + g3; W = W0 - .1 (v1 + v2 + v3)
    g1, g2, g3 = (g for g, _ in GRADS)
    v1 = g1
    v2 = 0.9 * v1 + g2
    v3 = 0.9 * v2 + g3
    assert np.allclose(W, W0 - 0.1 * (v1 + v2 + v3))
    assert np.allclose(opt.state["layers.0.W"]["velocity"], v3)


def test_nesterov_by_hand():
    W, _, _ = run("nesterov", momentum=0.5)
    w, v = W0.copy(), np.zeros_like(W0)
    for g, _ in GRADS:
        v = 0.5 * v + g
        w = w - 0.1 * (g + 0.5 * v)
    assert np.allclose(W, w)


def adam_by_hand(decoupled, wd):
    w, m, v = W0.copy(), np.zeros_like(W0), np.zeros_like(W0)
    for t, (g, _) in enumerate(GRADS, start=1):
        if decoupled:
            w = w * (1 - 0.1 * wd)
        else:
            g = g + wd * w
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        mhat, vhat = m / (1 - 0.9 ** t), v / (1 - 0.999 ** t)
        w = w - 0.1 * mhat / (np.sqrt(vhat) + 1e-8)
    return w


@pytest.mark.parametrize("name, wd", [("adam", 0.0), ("adam", 0.1), ("adamw", 0.1)])
def test_adam_family(name, wd):
    W, _, opt = run(name, weight_decay=wd)
    assert np.allclose(W, adam_by_hand(name == "adamw", wd), rtol=1e-10, atol=1e-12)
    assert opt.t == 3


def test_adam_first_step_is_lr_times_sign():
    params = {"layers.0.W": W0.copy()}
    opt = make_optimizer(params, OptimizerConfig(name="adam", learning_rate=0.01))
    opt.step(params, {"layers.0.W": np.array([[3.0, -0.001]])}, 0.01)
    assert np.allclose(params["layers.0.W"], W0 - 0.01 * np.array([[1.0, -1.0]]), atol=1e-7)


def test_float32_stays_float32():
    params = {"layers.0.W": W0.astype(np.float32), "layers.0.b": B0.astype(np.float32)}
    for name in ("sgd", "momentum", "nesterov", "adam", "adamw"):
        opt = make_optimizer(params, replace(OptimizerConfig(), name=name, weight_decay=0.1))
        opt.step(params, {"layers.0.W": GRADS[0][0].astype(np.float32),
                          "layers.0.b": GRADS[0][1].astype(np.float32)}, 0.1)
        assert all(p.dtype == np.float32 for p in params.values())
        assert all(a.dtype == np.float32 for a in opt.state_arrays().values())


def test_max_norm_and_clipping():
    W = np.array([[3.0, 0.1], [4.0, 0.1]])
    apply_max_norm(W, 2.0)
    assert np.allclose(W, [[1.2, 0.1], [1.6, 0.1]])  # column 0 had norm 5
    grads = {"a": np.array([3.0]), "b": np.array([4.0])}
    assert clip_grad_norm(grads, 1.0) == pytest.approx(5.0)
    assert np.allclose([grads["a"][0], grads["b"][0]], [0.6, 0.8])


# --- schedules ---------------------------------------------------------------------------

def lr_at(step, **kw):
    return learning_rate(replace(ScheduleConfig(), **kw), 0.1, step, steps_per_epoch=10, epochs=10)


def test_constant_and_warmup():
    assert lr_at(57, name="constant") == 0.1
    assert lr_at(0, name="constant", warmup_epochs=1) == pytest.approx(0.01)
    assert lr_at(4, name="constant", warmup_epochs=1) == pytest.approx(0.05)
    assert lr_at(9, name="constant", warmup_epochs=1) == pytest.approx(0.1)


def test_step():
    assert lr_at(29, name="step", step_epochs=3, gamma=0.5) == pytest.approx(0.1)
    assert lr_at(30, name="step", step_epochs=3, gamma=0.5) == pytest.approx(0.05)
    assert lr_at(99, name="step", step_epochs=3, gamma=0.5) == pytest.approx(0.1 * 0.5 ** 3)


def test_cosine():
    assert lr_at(0, name="cosine") == pytest.approx(0.1)
    assert lr_at(50, name="cosine") == pytest.approx(0.05)
    assert lr_at(100, name="cosine", min_lr=0.001) == pytest.approx(0.001)
    # with 1 warmup epoch: linear to step 9, cosine over the 90 steps after
    assert lr_at(4, name="cosine", warmup_epochs=1) == pytest.approx(0.05)
    assert lr_at(55, name="cosine", warmup_epochs=1) == pytest.approx(0.05)


def test_onecycle():
    kw = dict(name="onecycle", pct_start=0.3, div_factor=25, final_div_factor=1e4)
    assert lr_at(0, **kw) == pytest.approx(0.004)
    assert lr_at(15, **kw) == pytest.approx((0.004 + 0.1) / 2)
    assert lr_at(30, **kw) == pytest.approx(0.1)
    assert lr_at(100, **kw) == pytest.approx(0.004 / 1e4)


@pytest.mark.parametrize("name", ["momentum", "nesterov", "adam", "adamw"])
def test_state_of_dead_inputs_never_goes_subnormal(name):
    """A weight whose gradient is 0 from some step on (an always-black pixel): its momentum
    decays towards 0 and must be flushed before it becomes a slow subnormal float."""
    params = {"layers.0.W": np.ones((4, 3), np.float32)}
    opt = make_optimizer(params, replace(OptimizerConfig(), name=name))
    grad = np.full((4, 3), 0.5, np.float32)
    opt.step(params, {"layers.0.W": grad}, 0.01)
    zero = np.zeros_like(grad)
    tiny = np.finfo(np.float32).tiny
    for _ in range(3000):
        opt.step(params, {"layers.0.W": zero}, 0.01)
        for a in opt.state_arrays().values():
            assert not np.any((a != 0) & (np.abs(a) < tiny))
    assert not opt.state_arrays()[f"layers.0.W.{opt.state_names[0]}"].any()


def test_gemm_tn_adds_the_product_into_a_scaled_buffer():
    from mnist_bp.nn.blas import gemm_tn

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = rng.random((5, 3)).astype(dtype)
        g = rng.random((5, 4)).astype(dtype)
        c = rng.random((3, 4)).astype(dtype)
        want = x.T @ g + 0.9 * c
        gemm_tn(x, g, 0.9, c)
        assert np.allclose(c, want, rtol=1e-5)
        strided = rng.random((5, 6)).astype(dtype)[:, ::2]  # not contiguous: numpy fallback
        c2 = np.zeros((3, 4), dtype)
        gemm_tn(strided, g, 0.0, c2)
        assert np.allclose(c2, strided.T @ g, rtol=1e-5)


def test_fused_momentum_matches_the_plain_update():
    """Momentum computed inside backward's matrix product (the fast path) follows the same
    trajectory as v <- mu v + g applied by the optimizer."""
    from conftest import synthetic_digits
    from mnist_bp.config import Config, TrainingConfig
    from mnist_bp.data.batches import Normalizer
    from mnist_bp.data.cache import Split
    from mnist_bp.training import Trainer

    images, labels = synthetic_digits(256, seed=1)
    split = Split(images, labels)
    base = Config(optimizer=replace(OptimizerConfig(), name="momentum", learning_rate=0.05,
                                    weight_decay=1e-3))
    fused = Trainer(base, split, None, Normalizer())
    plain = Trainer(replace(base, training=replace(TrainingConfig(), clip_grad_norm=1e9)),
                    split, None, Normalizer())
    assert fused.optimizer.fused and not plain.optimizer.fused
    for step in range(8):
        index = np.arange(step * 32, step * 32 + 32)
        for trainer in (fused, plain):
            x, y = trainer.train_maker.batch(index)
            trainer.train_step(x.copy(), y, step, None)
    for name, p in fused.params.items():
        assert np.allclose(p, plain.params[name], rtol=1e-4, atol=1e-6), name
    for name, v in fused.optimizer.state_arrays().items():
        assert np.allclose(v, plain.optimizer.state_arrays()[name], rtol=1e-4, atol=1e-6)


def test_blas_addresses_follow_arrays_that_die_and_are_replaced():
    """The address cache behind the BLAS calls: a new array that takes a dead one's id gets
    its own address, results stay right, and the cache keeps nothing alive."""
    import gc
    import weakref

    from mnist_bp.nn import blas

    for _ in range(50):  # ids of dead arrays get reused quickly
        x = np.arange(1000, dtype=np.float32)
        y = np.ones(1000, np.float32)
        blas.axpy(2.0, x, y)
        assert np.array_equal(y, 1 + 2 * np.arange(1000, dtype=np.float32))
        assert blas._address(y) == y.ctypes.data
    ref = weakref.ref(y)
    del x, y
    gc.collect()
    assert ref() is None
