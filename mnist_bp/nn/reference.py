"""Backpropagation as the equations write it: start reading here.

The fast layers (layers.py, activations.py) compute exactly this, but into reused buffers,
through the products backend and with the optimizer's needs in mind. This module is the
same network in plain numpy expressions, no buffers and no backends, so that the chain rule
can be read line by line; the tests check the fast code, the input gradient and `explain`
against it. Any dtype works (the tests use float64).

For an MLP with Linear layers  z_i = a_{i-1} W_i + b_i  and activations  a_i = f(z_i)
(a_0 = x, no activation after the last layer unless the outputs are sigmoids):

    forward:   a_0 = x;  z_i = a_{i-1} W_i + b_i;  a_i = f(z_i)
    backward:  given g = dL/d(outputs)
               dL/dz_i     = dL/da_i * f'(z_i)            (elementwise)
               dL/dW_i     = a_{i-1}^T dL/dz_i             (D_in, D_out)
               dL/db_i     = sum over the batch of dL/dz_i (D_out,)
               dL/da_{i-1} = dL/dz_i W_i^T                 (N, D_in)
    and dL/da_0 = dL/dx is the gradient for the input (what `explain` shows).

Shapes are batch-first: x `(N, D)`, W `(D_in, D_out)`, b `(D_out,)`.
"""

from __future__ import annotations

import numpy as np

GELU_C = np.sqrt(2.0 / np.pi)
GELU_K = 0.044715


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def gelu(z):
    return 0.5 * z * (1 + np.tanh(GELU_C * (z + GELU_K * z ** 3)))


def gelu_derivative(z):
    t = np.tanh(GELU_C * (z + GELU_K * z ** 3))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t ** 2) * GELU_C * (1 + 3 * GELU_K * z ** 2)


# name -> (f(z), f'(z)); leaky ReLU's slope is passed in
ACTIVATIONS = {
    "relu": (lambda z, s: np.maximum(z, 0), lambda z, s: (z > 0).astype(z.dtype)),
    "leaky_relu": (lambda z, s: np.where(z > 0, z, s * z),
                   lambda z, s: np.where(z > 0, 1, s).astype(z.dtype)),
    "tanh": (lambda z, s: np.tanh(z), lambda z, s: 1 - np.tanh(z) ** 2),
    "sigmoid": (lambda z, s: sigmoid(z), lambda z, s: sigmoid(z) * (1 - sigmoid(z))),
    "gelu": (lambda z, s: gelu(z), lambda z, s: gelu_derivative(z)),
}


def forward(params: dict, x, activation: str = "relu", slope: float = 0.01,
            sigmoid_outputs: bool = False):
    """x `(N, D)` -> (outputs `(N, K)`, the z_i and a_i that backward needs)."""
    f, _ = ACTIVATIONS[activation]
    n_layers = len(params) // 2
    a, zs, inputs = x, [], []
    for i in range(n_layers):
        inputs.append(a)
        z = a @ params[f"layers.{i}.W"] + params[f"layers.{i}.b"]
        zs.append(z)
        last = i == n_layers - 1
        a = (sigmoid(z) if sigmoid_outputs else z) if last else f(z, slope)
    return a, (zs, inputs)


def backward(params: dict, cache, grad_out, activation: str = "relu", slope: float = 0.01,
             sigmoid_outputs: bool = False):
    """dL/d(outputs) `(N, K)` -> (dL/dparams under the parameters' names, dL/dx `(N, D)`)."""
    _, df = ACTIVATIONS[activation]
    zs, inputs = cache
    n_layers = len(zs)
    grads = {}
    g = grad_out  # dL/da_i, from the last layer down
    for i in reversed(range(n_layers)):
        last = i == n_layers - 1
        if not last:
            g = g * df(zs[i], slope)                 # dL/dz_i
        elif sigmoid_outputs:
            s = sigmoid(zs[i])
            g = g * s * (1 - s)
        grads[f"layers.{i}.W"] = inputs[i].T @ g   # dL/dW_i
        grads[f"layers.{i}.b"] = g.sum(axis=0)      # dL/db_i
        g = g @ params[f"layers.{i}.W"].T           # dL/da_{i-1}
    return grads, g


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def probability_gradient(outputs, target, sigmoid_outputs: bool = False):
    """(p_target `(N,)`, dp_target/d(outputs) `(N, K)`) of the network's outputs.

    Softmax:  p = softmax(z),  dp_t/dz_j = p_t (delta_tj - p_j).
    Sigmoid outputs a (the classic network): p = a / sum(a),  dp_t/da_j = (delta_tj - p_t) / sum(a).
    """
    n, k = outputs.shape
    onehot = np.eye(k, dtype=outputs.dtype)[target]
    if sigmoid_outputs:
        total = outputs.sum(axis=1, keepdims=True)
        p = outputs / total
        p_t = p[np.arange(n), target]
        return p_t, (onehot - p_t[:, None]) / total
    p = softmax(outputs)
    p_t = p[np.arange(n), target]
    return p_t, p_t[:, None] * (onehot - p)
