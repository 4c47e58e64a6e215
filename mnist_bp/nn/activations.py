"""Activation layers: each forward with its backward right under it.

All work elementwise on `(N, D)` arrays, write into reused buffers and keep only what the
backward pass needs (a boolean mask, or the output).
"""

from __future__ import annotations

import numpy as np

from mnist_bp.nn.layers import Layer


class ReLU(Layer):
    def forward(self, x, training=False, rng=None):
        self.mask = np.greater(x, 0, out=self.buffer("mask", x.shape, np.bool_))
        # Against an array of zeros, not the scalar 0: that takes numpy's vectorised loop.
        return np.maximum(x, self.zeros(x.shape, x.dtype),
                          out=self.buffer("out", x.shape, x.dtype))

    def backward(self, grad_out):
        # d relu(x)/dx = 1 where x > 0, else 0
        dx = self.buffer("dx", grad_out.shape, grad_out.dtype)
        return np.multiply(grad_out, self.mask, out=dx)


class LeakyReLU(Layer):
    def __init__(self, slope: float = 0.01):
        super().__init__()
        self.slope = slope

    def forward(self, x, training=False, rng=None):
        self.mask = np.greater(x, 0, out=self.buffer("mask", x.shape, np.bool_))
        out = np.multiply(x, x.dtype.type(self.slope), out=self.buffer("out", x.shape, x.dtype))
        np.copyto(out, x, where=self.mask)
        return out

    def backward(self, grad_out):
        # slope 1 where x > 0, else `slope`
        dx = np.multiply(grad_out, grad_out.dtype.type(self.slope),
                         out=self.buffer("dx", grad_out.shape, grad_out.dtype))
        np.copyto(dx, grad_out, where=self.mask)
        return dx


class Tanh(Layer):
    def forward(self, x, training=False, rng=None):
        self.out = np.tanh(x, out=self.buffer("out", x.shape, x.dtype))
        return self.out

    def backward(self, grad_out):
        # d tanh/dx = 1 - tanh^2
        dx = np.square(self.out, out=self.buffer("dx", grad_out.shape, grad_out.dtype))
        np.subtract(1, dx, out=dx)
        dx *= grad_out
        return dx


class Sigmoid(Layer):
    def forward(self, x, training=False, rng=None):
        # sigma(x) = (1 + tanh(x/2)) / 2: no overflow for large |x|
        out = np.multiply(x, x.dtype.type(0.5), out=self.buffer("out", x.shape, x.dtype))
        np.tanh(out, out=out)
        out += 1
        out *= x.dtype.type(0.5)
        self.out = out
        return out

    def backward(self, grad_out):
        # d sigma/dx = sigma (1 - sigma)
        dx = np.subtract(1, self.out, out=self.buffer("dx", grad_out.shape, grad_out.dtype))
        dx *= self.out
        dx *= grad_out
        return dx


class GELU(Layer):
    """GELU, tanh approximation: 0.5 x (1 + tanh(c (x + 0.044715 x^3))), c = sqrt(2/pi)."""

    C = np.sqrt(2.0 / np.pi)
    K = 0.044715

    def forward(self, x, training=False, rng=None):
        self.x = x
        t = self.buffer("t", x.shape, x.dtype)
        np.multiply(x, x, out=t)
        t *= x.dtype.type(self.K)
        t += 1
        t *= x
        t *= x.dtype.type(self.C)
        self.t = np.tanh(t, out=t)
        out = np.add(t, 1, out=self.buffer("out", x.shape, x.dtype))
        out *= x
        out *= x.dtype.type(0.5)
        return out

    def backward(self, grad_out):
        # d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2)
        x, t, dt = self.x, self.t, grad_out.dtype.type
        inner = np.multiply(x, x, out=self.buffer("inner", x.shape, x.dtype))
        inner *= dt(3 * self.K)
        inner += 1
        inner *= dt(self.C)
        sech2 = np.multiply(t, t, out=self.buffer("sech2", x.shape, x.dtype))
        np.subtract(1, sech2, out=sech2)
        inner *= sech2
        inner *= x
        inner += t
        inner += 1
        inner *= dt(0.5)
        return np.multiply(inner, grad_out, out=self.buffer("dx", x.shape, x.dtype))


ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid,
               "gelu": GELU}


def make_activation(name: str, leaky_slope: float = 0.01) -> Layer:
    if name == "leaky_relu":
        return LeakyReLU(leaky_slope)
    return ACTIVATIONS[name]()
