"""Layers: Linear and Dropout. Activations live in activations.py.

Contract (STYLE.md): `forward(x, training, rng)` keeps only what `backward` needs;
`backward(grad_out)` returns the gradient for the input and *assigns* `grads[name]` for each
`params[name]` (one exception: plain momentum, see `Linear.grad_decay`). Arrays are
batch-first: `x` is `(N, D)`. Outputs are written into buffers the layer owns and reuses (no
allocation per step), so an output is valid until the next forward call of the same layer.
"""

from __future__ import annotations

import math

import numpy as np

from mnist_bp.nn.products import NumpyProducts


class Buffered:
    """Named scratch arrays, reused across steps while shape and dtype stay the same."""

    def buffer(self, name: str, shape, dtype) -> np.ndarray:
        buffers = self.__dict__.setdefault("_buffer_pool", {})
        buf = buffers.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = buffers[name] = np.empty(shape, dtype)
        return buf

    def zeros(self, shape, dtype) -> np.ndarray:
        """Read-only zeros of this shape and dtype: a view of one kept array, grown when a
        larger shape asks (so training and evaluation batch sizes share it)."""
        size = math.prod(shape)
        kept = self.__dict__.get("_zeros")
        if kept is None or kept.size < size or kept.dtype != dtype:
            kept = self._zeros = np.zeros(size, dtype)
            kept.flags.writeable = False
        return kept[:size].reshape(shape)


class Layer(Buffered):
    """Base class: no parameters, reusable output buffers."""

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, training: bool = False, rng=None) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def backward_input(self, grad_out: np.ndarray) -> np.ndarray:
        """Only the gradient for the input (explain's pixel gradients): parameter-free layers
        compute nothing else anyway."""
        return self.backward(grad_out)


def init_std(init: str, d_in: int, d_out: int, scale: float) -> float:
    """He for ReLU-like units, Xavier (Glorot) for tanh/sigmoid, or a plain std `scale`."""
    if init == "he":
        return scale * np.sqrt(2.0 / d_in)
    if init == "xavier":
        return scale * np.sqrt(2.0 / (d_in + d_out))
    return scale


class Linear(Layer):
    """y = x W + b, with W `(D_in, D_out)` and b `(D_out,)`."""

    def __init__(self, d_in: int, d_out: int, rng: np.random.Generator, init="he",
                 scale=1.0, dtype=np.float32, input_grad=True):
        super().__init__()
        std = init_std(init, d_in, d_out, scale)
        W = rng.standard_normal((d_in, d_out), dtype=np.float64) * std
        self.params = {"W": W.astype(dtype), "b": np.zeros(d_out, dtype)}
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        # The first layer's input is data: computing its gradient would be wasted work.
        self.input_grad = input_grad
        # Set by the momentum optimizer (optimizers.Momentum.fuse_into, which says why it
        # pays): backward then leaves grad_decay * (what grads held) + gradient in grads,
        # i.e. the momentum buffer itself, added inside the matrix product at no extra cost.
        # None (every other optimizer, and evaluation): plain gradients.
        self.grad_decay: float | None = None
        # Who multiplies (products.py): numpy by default; MLP sets oneDNN or bfloat16.
        self.products = NumpyProducts()

    def forward(self, x, training=False, rng=None):
        self.x = x  # (N, D_in), needed for dW
        W, b = self.params["W"], self.params["b"]
        out = self.buffer("out", (x.shape[0], W.shape[1]), x.dtype)
        self.products.forward(x, W, out, training)
        out += b
        return out

    def backward(self, grad_out):
        # dL/dW = x^T g  (D_in, D_out);  dL/db = sum_n g  (D_out,);  dL/dx = g W^T  (N, D_in)
        dx = self.buffer("dx", self.x.shape, grad_out.dtype) if self.input_grad else None
        self.products.backward(self.x, grad_out, self.params["W"], self.grads["W"],
                               self.grad_decay, dx)
        if self.grad_decay is None:
            np.sum(grad_out, axis=0, out=self.grads["b"])
        else:
            self.grads["b"] *= self.grads["b"].dtype.type(self.grad_decay)
            self.grads["b"] += grad_out.sum(axis=0)
        return dx

    def backward_input(self, grad_out):
        # dL/dx = g W^T  (N, D_in), whatever `input_grad` says; grads are left as they are
        return np.matmul(grad_out, self.params["W"].T)


class Dropout(Layer):
    """Inverted dropout: zero each unit with probability p, scale the rest by 1/(1-p).

    Off at evaluation (`training=False`), where it is the identity.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.active = False

    def forward(self, x, training=False, rng=None):
        self.active = training and self.p > 0
        if not self.active:
            return x
        # 16 random bits per unit, compared with p * 2^16: twice as fast as drawing floats,
        # and p is matched to within 2^-16.
        bits = rng.bit_generator.random_raw(-(-x.size // 4)).view(np.uint16)[:x.size]
        threshold = np.uint16(min(65535, round(self.p * 65536)))
        self.keep = np.greater_equal(bits.reshape(x.shape), threshold,
                                     out=self.buffer("keep", x.shape, np.bool_))
        self.scale = x.dtype.type(1.0 / (1.0 - self.p))
        out = np.multiply(x, self.keep, out=self.buffer("out", x.shape, x.dtype))
        out *= self.scale
        return out

    def backward(self, grad_out):
        if not self.active:
            return grad_out
        dx = np.multiply(grad_out, self.keep, out=self.buffer("dx", grad_out.shape, grad_out.dtype))
        dx *= self.scale
        return dx
