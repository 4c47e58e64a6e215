"""Optimizers: one object walks all parameters and updates them in place.

`step(params, grads, lr)` takes the learning rate from the schedule (a function of the step,
see schedules.py), so no schedule state hides in here. Per-parameter state is stored under
the parameter's name (`layers.0.W` -> `velocity`, or `m` and `v`). Weight decay applies to
weight matrices (`.W`), not biases.
"""

from __future__ import annotations

import numpy as np

from mnist_bp.nn.blas import axpby, axpy

# Momentum of a weight whose gradient stays 0 (a pixel that is always black) decays
# geometrically into subnormal floats, and arithmetic on subnormals is about a hundred times
# slower on x86 (docs/benchmarks.md). Every FLUSH_EVERY
# updates, state below TINY is set to 0: far below anything that moves a weight, and far
# enough above the subnormal range (1.2e-38) that no decay reaches it in between.
FLUSH_EVERY = 32
TINY = 1e-30


def flush_tiny(a: np.ndarray) -> None:
    np.copyto(a, 0, where=np.abs(a) < TINY)


class Optimizer:
    state_names: tuple[str, ...] = ()
    needs_scratch = True  # a temporary per parameter for multi-step updates

    def __init__(self, params: dict[str, np.ndarray], cfg):
        self.cfg = cfg
        self.weight_decay = cfg.weight_decay
        self.max_norm = cfg.max_norm
        self.t = 0  # number of updates done
        self.state = {name: {s: np.zeros_like(p) for s in self.state_names}
                      for name, p in params.items()}
        self._scratch = {name: np.empty_like(p) if self.needs_scratch else None
                         for name, p in params.items()}

    def decays(self, name: str) -> bool:
        return self.weight_decay > 0 and name.endswith(".W")

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        self.t += 1
        for name, p in params.items():
            self.update(name, p, grads[name], p.dtype.type(lr), self._scratch[name])
            if self.max_norm > 0 and name.endswith(".W"):
                apply_max_norm(p, self.max_norm)
        if self.t % FLUSH_EVERY == 0:
            for a in self.state_arrays().values():
                flush_tiny(a)

    def update(self, name, p, g, lr, tmp) -> None:
        raise NotImplementedError

    def l2_grad(self, name, p, g, tmp) -> np.ndarray:
        """g + weight_decay * p (the L2 penalty's gradient), or g itself."""
        if not self.decays(name):
            return g
        np.multiply(p, p.dtype.type(self.weight_decay), out=tmp)
        tmp += g
        return tmp

    # checkpoints: per-parameter arrays plus the step counter
    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"{name}.{s}": a for name, st in self.state.items() for s, a in st.items()}

    def load_state(self, arrays: dict[str, np.ndarray], t: int) -> None:
        for key, a in self.state_arrays().items():
            a[...] = arrays[key]
        self.t = t


class SGD(Optimizer):
    """p <- p - lr (g + wd p)"""

    needs_scratch = False

    def update(self, name, p, g, lr, tmp):
        if self.decays(name):
            p *= p.dtype.type(1 - lr * self.weight_decay)
        axpy(-lr, g, p)


class Momentum(Optimizer):
    """v <- mu v + g + wd p;  p <- p - lr v   (PyTorch's convention)"""

    state_names = ("velocity",)
    needs_scratch = False
    fused = False

    def fuse_into(self, linears: dict) -> None:
        """Make each Linear layer's gradient buffers the velocity buffers, with grad_decay mu:
        backward then computes v <- mu v + g inside its matrix product, and `update` only has
        p <- p - lr v left to do: one pass over the weights fewer. Not with gradient
        clipping, which needs the bare gradients.

        The fusion is the optimizer's decision and lives here; without it (the layers writing
        plain gradients and `update` doing v <- mu v + g itself, the reference path tested
        against this one in tests/test_optim.py) configs/bench.yaml's epoch took 5.4 %, 4.0 %
        and 5.1 % longer in three alternating runs (5, 9 and 15 rounds of 3 epochs, oneDNN
        products, AMD EPYC Zen 4): more than the 5 % a readability change may cost, so it
        stays. nn/reference.py has the plain chain rule."""
        for prefix, layer in linears.items():
            for name in layer.grads:
                layer.grads[name] = self.state[f"{prefix}.{name}"]["velocity"]
            layer.grad_decay = self.cfg.momentum
        self.fused = True

    def update(self, name, p, g, lr, tmp):
        v = self.state[name]["velocity"]
        if not self.fused:
            axpby(1.0, g, self.cfg.momentum, v)
        if self.decays(name):
            axpy(self.weight_decay, p, v)
        axpy(-lr, v, p)


class Nesterov(Optimizer):
    """v <- mu v + g';  p <- p - lr (g' + mu v),  g' = g + wd p   (PyTorch's convention)"""

    state_names = ("velocity",)

    def update(self, name, p, g, lr, tmp):
        v = self.state[name]["velocity"]
        g = self.l2_grad(name, p, g, tmp)
        axpby(1.0, g, self.cfg.momentum, v)
        axpy(-lr, g, p)
        axpy(-lr * self.cfg.momentum, v, p)


class Adam(Optimizer):
    """m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  p <- p - lr m^ / (sqrt(v^) + eps)

    with bias corrections m^ = m / (1 - b1^t), v^ = v / (1 - b2^t). Weight decay is an L2
    term added to g (AdamW decouples it instead).
    """

    state_names = ("m", "v")
    decoupled = False

    def update(self, name, p, g, lr, tmp):
        cfg, dt = self.cfg, p.dtype.type
        m, v = self.state[name]["m"], self.state[name]["v"]
        if self.decoupled:
            if self.decays(name):
                p *= dt(1 - lr * self.weight_decay)
        else:
            g = self.l2_grad(name, p, g, tmp)
        axpby(1 - cfg.beta1, g, cfg.beta1, m)
        np.square(g, out=tmp)  # g may be tmp itself: m is done with it
        axpby(1 - cfg.beta2, tmp, cfg.beta2, v)
        c1 = 1 - cfg.beta1 ** self.t
        c2 = 1 - cfg.beta2 ** self.t
        # lr m^ / (sqrt(v^) + eps) = (lr sqrt(c2) / c1) m / (sqrt(v) + eps sqrt(c2))
        root_c2 = np.sqrt(c2)
        np.sqrt(v, out=tmp)
        tmp += dt(cfg.eps * root_c2)
        np.divide(m, tmp, out=tmp)
        axpy(-lr * root_c2 / c1, tmp, p)


class AdamW(Adam):
    """Adam with decoupled weight decay: p <- p (1 - lr wd) before the Adam step."""

    decoupled = True


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adam": Adam, "adamw": AdamW}


def make_optimizer(params, cfg) -> Optimizer:
    return OPTIMIZERS[cfg.name](params, cfg)


def apply_max_norm(W: np.ndarray, c: float) -> None:
    """Rescale each column of W `(D_in, D_out)` (one unit's incoming weights) to norm <= c."""
    norms = np.sqrt(np.einsum("ij,ij->j", W, W))
    np.maximum(norms, c, out=norms)
    W *= (c / norms).astype(W.dtype)


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most `max_norm`."""
    total = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))
    if total > max_norm:
        scale = max_norm / (total + 1e-12)
        for g in grads.values():
            g *= g.dtype.type(scale)
    return total
