"""Loss functions with one interface: `forward(outputs, labels) -> mean loss` and
`backward() -> dL/doutputs`.

Both average over the batch, and divide by N in exactly one place: the gradient.
"""

from __future__ import annotations

import numpy as np

from mnist_bp.nn.layers import Buffered


class SoftmaxCrossEntropy(Buffered):
    """Softmax fused with cross-entropy on logits `(N, K)`, optionally label-smoothed.

    loss = -(1/N) sum_n sum_k t_nk log p_nk, t = (1 - eps) onehot + eps / K;
    the gradient w.r.t. the logits is (p - t) / N.
    """

    def __init__(self, label_smoothing: float = 0.0):
        self.eps = label_smoothing

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        n, k = logits.shape
        rows = np.arange(n)
        # log-sum-exp with the row max subtracted: exp never overflows
        shifted = np.subtract(logits, logits.max(axis=1, keepdims=True),
                              out=self.buffer("shifted", logits.shape, logits.dtype))
        p = np.exp(shifted, out=self.buffer("p", logits.shape, logits.dtype))
        total = p.sum(axis=1, keepdims=True)
        p /= total
        log_total = np.log(total)[:, 0]
        log_p_true = shifted[rows, labels] - log_total  # (N,)
        loss = -(1 - self.eps) * log_p_true.sum(dtype=np.float64)
        if self.eps:
            log_p_sum = shifted.sum(axis=1, dtype=np.float64) - k * log_total
            loss -= self.eps / k * log_p_sum.sum()
        self.p, self.labels = p, labels
        return float(loss / n)

    def backward(self) -> np.ndarray:
        """(p - t) / N `(N, K)`, into a buffer of its own: calling it twice gives the same."""
        n, k = self.p.shape
        grad = self.buffer("grad", self.p.shape, self.p.dtype)
        np.copyto(grad, self.p)
        grad[np.arange(n), self.labels] -= grad.dtype.type(1 - self.eps)
        if self.eps:
            grad -= grad.dtype.type(self.eps / k)
        grad *= grad.dtype.type(1.0 / n)
        return grad


class MSE(Buffered):
    """Quadratic cost of the classic formulation: C = (1/2N) sum_n ||a_n - onehot(y_n)||^2.

    Used with sigmoid outputs `a` `(N, K)`; dC/da = (a - onehot) / N.
    """

    def forward(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        diff = self.diff = self.buffer("diff", outputs.shape, outputs.dtype)
        np.copyto(diff, outputs)
        diff[np.arange(len(labels)), labels] -= 1
        self.n = len(labels)
        return float(0.5 * np.square(diff, dtype=np.float64).sum() / self.n)

    def backward(self) -> np.ndarray:
        """(a - onehot) / N `(N, K)`, into a buffer of its own: calling it twice gives the same."""
        grad = self.buffer("grad", self.diff.shape, self.diff.dtype)
        return np.multiply(self.diff, grad.dtype.type(1.0 / self.n), out=grad)


def probabilities(outputs: np.ndarray, sigmoid_outputs: bool = False) -> np.ndarray:
    """The network's outputs `(N, K)` as probabilities, float64, rows summing to 1: the softmax
    of logits (max subtracted, so exp never overflows), or sigmoid outputs (the classic MSE
    network) divided by their sum."""
    p = np.array(outputs, np.float64)
    if sigmoid_outputs:
        return p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    p -= p.max(axis=1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=1, keepdims=True)
    return p


def make_loss(cfg) -> SoftmaxCrossEntropy | MSE:
    if cfg.name == "cross_entropy":
        return SoftmaxCrossEntropy(cfg.label_smoothing)
    return MSE()
