"""The three matrix products of a Linear layer, by numpy or by oneDNN, in float32 or bfloat16.

    forward   out = x W                       (N, D_out)
    backward  dW  = x^T g + beta dW           (D_in, D_out), beta > 0 fuses momentum
              dx  = g W^T                     (N, D_in), skipped for the first layer

`NumpyProducts` is the reference: numpy's matmul and its own BLAS. `OneDNNProducts` calls
oneDNN's sgemm (faster on CPUs with AVX-512; rounds differently, deterministically).
`BFloat16Products` rounds x, W and g to bfloat16 (nearest even) and multiplies them with
float32 accumulation and output, the recipe of PyTorch's autocast: master weights, optimizer
state, the loss and every elementwise pass stay float32. It does so only while training;
evaluation products are float32. Products under MIN_MACS multiply-adds stay numpy's. Each layer owns one products object (it keeps the layer's
bfloat16 copies between forward and backward).
"""

from __future__ import annotations

import numpy as np

from mnist_bp.nn import onednn
from mnist_bp.nn.blas import gemm_tn


class NumpyProducts:
    name = "numpy"

    def forward(self, x, W, out, training=False):
        np.matmul(x, W, out=out)

    def backward(self, x, g, W, dW, beta, dx):
        if beta is None:
            np.matmul(x.T, g, out=dW)
        else:
            gemm_tn(x, g, beta, dW)
        if dx is not None:
            np.matmul(g, W.T, out=dx)


def _contiguous(*arrays) -> bool:
    return all(a.flags.c_contiguous for a in arrays)


# Products smaller than this many multiply-adds (N x D_in x D_out, the same for all three)
# stay with numpy in float32: starting oneDNN's threads costs more than they save there
# (configs/classic.yaml, batch 10 into 30 units: 2.3 x slower by oneDNN, 6 x in bfloat16).
MIN_MACS = 1 << 20


def _onednn_worth_it(x, W, *arrays) -> bool:
    return x.shape[0] * W.shape[0] * W.shape[1] >= MIN_MACS and _contiguous(x, W, *arrays)


class OneDNNProducts(NumpyProducts):
    name = "onednn"

    def __init__(self):
        if onednn.library() is None:
            raise RuntimeError("oneDNN is not installed (the fast extra)")

    def forward(self, x, W, out, training=False):
        if not _onednn_worth_it(x, W, out):
            return NumpyProducts.forward(self, x, W, out)
        onednn.gemm(x, W, out)

    def backward(self, x, g, W, dW, beta, dx):
        if not _onednn_worth_it(x, W, g, dW):
            return NumpyProducts.backward(self, x, g, W, dW, beta, dx)
        onednn.gemm(x, g, dW, ta=True, beta=0.0 if beta is None else beta)
        if dx is not None:
            onednn.gemm(g, W, dx, tb=True)


class BFloat16Products(OneDNNProducts):
    name = "onednn-bfloat16"

    def __init__(self):
        super().__init__()
        self._buffers: dict[str, np.ndarray] = {}
        self._rounded = False  # whether the last forward kept bfloat16 copies of x and W

    def _bf16(self, name: str, a: np.ndarray) -> np.ndarray:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != a.shape:
            buf = self._buffers[name] = np.empty(a.shape, np.uint16)
        return onednn.to_bfloat16(a, buf)

    def forward(self, x, W, out, training=False):
        self._rounded = training and _onednn_worth_it(x, W, out)
        if not self._rounded:
            return super().forward(x, W, out)
        onednn.gemm(self._bf16("x", x), self._bf16("W", W), out)

    def backward(self, x, g, W, dW, beta, dx):
        if not (self._rounded and _contiguous(g, dW)):
            return super().backward(x, g, W, dW, beta, dx)
        gb = self._bf16("g", g)
        onednn.gemm(self._buffers["x"], gb, dW, ta=True, beta=0.0 if beta is None else beta)
        if dx is not None:
            onednn.gemm(gb, self._buffers["W"], dx, tb=True)


KINDS = {"numpy": NumpyProducts, "onednn": OneDNNProducts, "onednn-bfloat16": BFloat16Products}
