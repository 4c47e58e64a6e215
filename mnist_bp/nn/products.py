"""The three matrix products of a Linear layer, by numpy or by oneDNN, in float32 or bfloat16.

    forward   out = x W                       (N, D_out)
    backward  dW  = x^T g + beta dW           (D_in, D_out), beta > 0 fuses momentum
              dx  = g W^T                     (N, D_in), skipped for the first layer

`NumpyProducts` is the reference: numpy's matmul and its own BLAS. `OneDNNProducts` calls
oneDNN's sgemm (faster on CPUs with AVX-512; rounds differently, deterministically).
`BFloat16Products` rounds x, W and g to bfloat16 (nearest even) and multiplies them with
float32 accumulation and output, the recipe of PyTorch's autocast: master weights, optimizer
state, the loss and every elementwise pass stay float32. It does so only while training;
evaluation products are float32. Products under MIN_MACS multiply-adds are numpy's (on
inputs rounded the same way). Each layer owns one products object (it keeps the layer's
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
# are numpy's: starting oneDNN's threads costs more than they save there (configs/classic.yaml,
# 10 x 784 x 30: 2.3 x slower by oneDNN, 6 x in bfloat16). In bfloat16 their inputs are still
# rounded (by round_bfloat16, in numpy), so the arithmetic is the same. Not higher: the bench
# net's output layer (128 x 512 x 10) is 20 % faster a step through oneDNN in bfloat16.
MIN_MACS = 1 << 18
_SIGN, _EXPONENT, _NAN_QUIET = np.uint32(0x80000000), np.uint32(0x7F800000), np.uint32(0x400000)


def round_bfloat16(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`out` (float32) = x rounded to bfloat16's precision, nearest even, as oneDNN's reorder
    does it: subnormals become zero (keeping the sign), NaNs stay NaN. For small arrays: a
    few numpy passes, no threads."""
    u = x.view(np.uint32)
    r = out.view(np.uint32)
    np.right_shift(u, 16, out=r)
    r &= 1
    r += 0x7FFF
    r += u  # wraps around only for negative NaNs, fixed below
    r &= np.uint32(0xFFFF0000)
    exponent = u & _EXPONENT
    np.copyto(r, u & _SIGN, where=exponent == 0)  # zero and subnormals: signed zero
    nan = (exponent == _EXPONENT) & ((u & np.uint32(0x7FFFFF)) != 0)
    np.copyto(r, (u | _NAN_QUIET) & np.uint32(0xFFFF0000), where=nan)
    return out


def _onednn_worth_it(x, W, *arrays) -> bool:
    """Large enough, and float32 C-contiguous 2-D arrays whose shapes fit (anything else
    numpy handles, or refuses with its own error)."""
    return (x.ndim == W.ndim == 2 and x.shape[1] == W.shape[0]
            and x.shape[0] * W.shape[0] * W.shape[1] >= MIN_MACS
            and all(a.dtype == np.float32 for a in (x, W, *arrays))
            and _contiguous(x, W, *arrays))


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
        if not (_onednn_worth_it(x, W, g, dW) and g.shape == (x.shape[0], W.shape[1])
                and dW.shape == W.shape and (dx is None or dx.shape == x.shape)):
            return NumpyProducts.backward(self, x, g, W, dW, beta, dx)
        onednn.gemm(x, g, dW, ta=True, beta=0.0 if beta is None else beta)
        if dx is not None:
            onednn.gemm(g, W, dx, tb=True)


class BFloat16Products(OneDNNProducts):
    name = "onednn-bfloat16"

    def __init__(self):
        super().__init__()
        self._buffers: dict[str, np.ndarray] = {}
        self._rounded = None  # how the last forward rounded x and W: "onednn", "numpy" or None

    def _keep(self, name: str, a: np.ndarray, dtype) -> np.ndarray:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != a.shape or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(a.shape, dtype)
        if dtype == np.uint16:
            return onednn.to_bfloat16(a, buf)
        return round_bfloat16(a, buf)

    def forward(self, x, W, out, training=False):
        self._rounded = None
        if not training:
            return super().forward(x, W, out)
        if _onednn_worth_it(x, W, out):
            self._rounded = "onednn"
            onednn.gemm(self._keep("x", x, np.uint16), self._keep("W", W, np.uint16), out)
        else:
            self._rounded = "numpy"
            np.matmul(self._keep("x32", x, np.float32), self._keep("W32", W, np.float32),
                      out=out)

    def backward(self, x, g, W, dW, beta, dx):
        if self._rounded == "onednn" and _contiguous(g, dW) and g.dtype == np.float32:
            gb = self._keep("g", g, np.uint16)
            onednn.gemm(self._buffers["x"], gb, dW, ta=True, beta=0.0 if beta is None else beta)
            if dx is not None:
                onednn.gemm(gb, self._buffers["W"], dx, tb=True)
        elif self._rounded == "numpy":
            NumpyProducts.backward(self, self._buffers["x32"], self._keep("g32", g, np.float32),
                                   self._buffers["W32"], dW, beta, dx)
        else:
            super().backward(x, g, W, dW, beta, dx)


KINDS = {kind.name: kind for kind in (NumpyProducts, OneDNNProducts, BFloat16Products)}
