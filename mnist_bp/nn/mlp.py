"""The multilayer perceptron built from a model config.

    [Dropout(input)] -> Linear -> act -> [Dropout] -> ... -> Linear -> [Sigmoid]

Backpropagation is the chain rule applied in reverse layer order: `backward` hands each
layer the gradient of the loss w.r.t. its output and receives the gradient w.r.t. its input.
Parameters are named `layers.<i>.W` / `layers.<i>.b` for the i-th Linear layer.
"""

from __future__ import annotations

import numpy as np

from mnist_bp.nn.activations import Sigmoid, make_activation
from mnist_bp.nn.layers import Dropout, Layer, Linear
from mnist_bp.nn.products import KINDS


class MLP:
    def __init__(self, cfg, rng: np.random.Generator, input_dim: int, num_classes: int,
                 dtype=np.float32, input_grad=False, products: str = "numpy"):
        """`products`: who multiplies, a key of products.KINDS (numpy, onednn,
        onednn-bfloat16); the caller checks that oneDNN is there."""
        self.layers: list[Layer] = []
        self.linears: dict[str, Linear] = {}
        if cfg.input_dropout > 0:
            self.layers.append(Dropout(cfg.input_dropout))
        sizes = [input_dim, *cfg.hidden, num_classes]
        for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            linear = Linear(d_in, d_out, rng, cfg.init, cfg.init_scale, dtype,
                            input_grad=input_grad or i > 0)
            linear.products = KINDS[products]()
            self.linears[f"layers.{i}"] = linear
            self.layers.append(linear)
            if i < len(sizes) - 2:
                self.layers.append(make_activation(cfg.activation, cfg.leaky_slope))
                if cfg.dropout > 0:
                    self.layers.append(Dropout(cfg.dropout))
        if cfg.output_activation == "sigmoid":
            self.layers.append(Sigmoid())

    def parameters(self) -> dict[str, np.ndarray]:
        """Every parameter array by name, e.g. `layers.0.W` `(D, H)`."""
        return {f"{prefix}.{name}": p for prefix, layer in self.linears.items()
                for name, p in layer.params.items()}

    def gradients(self) -> dict[str, np.ndarray]:
        """Gradients under the same names as `parameters()` (valid after `backward`)."""
        return {f"{prefix}.{name}": g for prefix, layer in self.linears.items()
                for name, g in layer.grads.items()}

    def load_parameters(self, arrays: dict[str, np.ndarray]) -> None:
        for name, p in self.parameters().items():
            p[...] = arrays[name]

    def forward(self, x: np.ndarray, training: bool = False, rng=None) -> np.ndarray:
        """`x` `(N, D)` -> outputs `(N, C)` (logits, or sigmoid activations)."""
        for layer in self.layers:
            x = layer.forward(x, training, rng)
        return x

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        """`grad` = dL/doutputs `(N, 10)`; fills every layer's grads; returns dL/dx if asked."""
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
            if grad is None:  # the first Linear skips dL/dx: nothing below needs it
                return None
        return grad

    def input_gradient(self, grad: np.ndarray) -> np.ndarray:
        """`grad` = dL/doutputs `(N, 10)` of the last `forward` -> dL/dx `(N, D)`, the chain
        rule carried down to the input; no parameter gradient is computed or changed."""
        for layer in reversed(self.layers):
            grad = layer.backward_input(grad)
        return grad
