"""Turning uint8 images into float32 model inputs, one batch at a time.

Images stay uint8 `(N, 28, 28)` (often memory-mapped) until a batch is gathered; the batch is
then converted in one step, augmented if asked, and normalised:
`x = (pixel / 255 - mean) / std` (`mean = 0, std = 1` for plain scaling).
"""

from __future__ import annotations

import numpy as np

from mnist_bp.data.augment import augment_batch
from mnist_bp.data.registry import IMAGE_PIXELS as INPUT_DIM
from mnist_bp.nn.layers import Buffered


class Normalizer:
    """pixel (uint8 or [0, 1] float) -> (pixel/255 - mean)/std, as one multiply-add; or, with
    `per_image`, each image standardised by its own mean and standard deviation."""

    def __init__(self, mean: float = 0.0, std: float = 1.0, per_image: bool = False):
        self.mean, self.std, self.per_image = float(mean), float(std), bool(per_image)

    @classmethod
    def fit(cls, kind: str, images: np.ndarray) -> Normalizer:
        if kind == "scale":
            return cls()
        if kind == "center":  # [0, 1] -> [-1, 1]: 1 - x (inverted colours) becomes -x
            return cls(0.5, 0.5)
        if kind == "image":  # any foreground/background intensities -> + or - one image
            return cls(per_image=True)
        sample = np.asarray(images[:10000], dtype=np.float32) / 255  # plenty for two numbers
        return cls(float(sample.mean()), float(sample.std()))

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "per_image": self.per_image}

    def from_uint8(self, u8: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.multiply(u8, np.float32(1 / (255 * self.std)), out=out)
        if self.mean:
            out -= np.float32(self.mean / self.std)
        return standardize_rows(out) if self.per_image else out

    def from_unit(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """`x` in [0, 1] (after augmentation) -> normalised."""
        if self.per_image:  # (mean 0, std 1): standardised straight into `out`
            return standardize_rows(x, out)
        if self.mean or self.std != 1:
            np.subtract(x, np.float32(self.mean), out=out)
            out *= np.float32(1 / self.std)
        else:
            np.copyto(out, x)
        return out

    def backward(self, x: np.ndarray, xn: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """dL/dx `(N, D)` of `x` in [0, 1] from dL/dxn, xn = from_unit(x) (explain.py).

        Dataset statistics: xn = (x - mean) / std, so dL/dx = dL/dxn / std. Per image:
        xn = (x - m) / s with m the row's mean and s = max(its std, MIN_STD), so
        dL/dx = (g - mean(g) - xn mean(g xn)) / s, or (g - mean(g)) / s where s is clamped."""
        t = x.dtype.type  # float32 in use, float64 in the gradient checks
        if not self.per_image:
            return grad * t(1 / self.std)
        d = t(x.shape[1])
        centred = x - x.mean(axis=1, keepdims=True)
        raw_std = np.sqrt(np.einsum("ij,ij->i", centred, centred) / d)[:, None]
        g = grad - grad.mean(axis=1, keepdims=True)
        g -= np.where(raw_std > MIN_STD, xn * (np.einsum("ij,ij->i", grad, xn)[:, None] / d), 0)
        return g / np.maximum(raw_std, t(MIN_STD))


# An image of one intensity has no contrast to standardise: its pixels become 0, not NaN.
MIN_STD = 1 / 255


def standardize_rows(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Each row (image) of `x` to mean 0 and standard deviation 1, into `out` (default: in
    place). Colours `bg + (fg - bg) x` map to sign(fg - bg) times the standardised x:
    inverting an image negates its input exactly, and other intensities change nothing else."""
    x = np.subtract(x, x.mean(axis=1, keepdims=True, dtype=np.float32),
                    out=x if out is None else out)
    std = np.sqrt(np.einsum("ij,ij->i", x, x) / np.float32(x.shape[1]))
    x *= (1 / np.maximum(std, np.float32(MIN_STD)))[:, None]
    return x


class BatchMaker(Buffered):
    """Gathers, converts, augments and normalises batches from uint8 images.

    Returned arrays are buffers reused by the next call with the same `slot` (two slots let
    one batch be prepared while the other is in use).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, normalizer: Normalizer,
                 augment_cfg=None, dtype=np.float32):
        self.flat = images.reshape(len(images), INPUT_DIM)
        self.labels = np.asarray(labels, np.intp)  # index-sized: the fastest to gather
        self.normalizer = normalizer
        self.augment_cfg = augment_cfg
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.labels)

    def _batch_arrays(self, n: int, slot: int = 0):
        return (self.buffer(f"u8.{slot}", (n, INPUT_DIM), np.uint8),
                self.buffer(f"x.{slot}", (n, INPUT_DIM), self.dtype))

    def batch(self, index: np.ndarray, rng: np.random.Generator | None = None, slot: int = 0):
        """`(x (B, 784) float32, y (B,))` for the images at `index`."""
        u8, x = self._batch_arrays(len(index), slot)
        np.take(self.flat, index, axis=0, out=u8)
        y = self.labels[index]
        if self.augment_cfg is None:
            return self.normalizer.from_uint8(u8, x), y
        unit = np.multiply(u8, np.float32(1 / 255), dtype=np.float32).reshape(-1, 28, 28)
        unit = augment_batch(unit, rng, self.augment_cfg)
        return self.normalizer.from_unit(unit.reshape(len(index), INPUT_DIM), x), y

    def slice(self, start: int, stop: int, transform=None):
        """A contiguous, unaugmented chunk (evaluation). `transform(unit, start, stop)` may
        change the [0, 1] images first (colour inversion and the like)."""
        u8, x = self._batch_arrays(stop - start)
        np.copyto(u8, self.flat[start:stop])
        y = self.labels[start:stop]
        if transform is None:
            return self.normalizer.from_uint8(u8, x), y
        unit = np.multiply(u8, np.float32(1 / 255), dtype=np.float32)
        return self.normalizer.from_unit(transform(unit, start, stop), x), y
