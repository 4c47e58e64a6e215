"""Data augmentation on batches of images `(B, 28, 28)` float32 in [0, 1].

Every transform works on the whole batch at once (no per-image Python loop), draws its
randomness from the generator it is given (one per training step, derived from the run's
seed, so resume stays bit-exact) and applies to each image with its own probability `p`.
Geometric transforms (shift, affine, elastic) are resampled together in one pass.
"""

from __future__ import annotations

import numpy as np

SIZE = 28


def _chosen(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """Boolean `(n,)`: which images a transform applies to."""
    return rng.random(n) < p


def shift(x: np.ndarray, rng: np.random.Generator, pixels: int, p: float = 1.0) -> np.ndarray:
    """Translate each image by whole pixels in [-pixels, pixels]^2, filling with 0."""
    n = len(x)
    offsets = rng.integers(-pixels, pixels + 1, size=(2, n))
    offsets *= _chosen(rng, n, p)
    if pixels == 0 or not offsets.any():
        return x
    s = pixels
    padded = np.zeros((n, SIZE + 2 * s, SIZE + 2 * s), x.dtype)
    padded[:, s:s + SIZE, s:s + SIZE] = x
    ar = np.arange(SIZE)
    rows = (s - offsets[0])[:, None] + ar  # (n, 28): source row of each output row
    cols = (s - offsets[1])[:, None] + ar
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def affine_matrices(rng, n: int, degrees: float, scale: float, shear: float, p: float):
    """`(n, 2, 2)` matrices: rotation x shear x zoom, identity for images not chosen."""
    theta = np.deg2rad(rng.uniform(-degrees, degrees, n))
    zoom = rng.uniform(1 - scale, 1 + scale, n)
    k = rng.uniform(-shear, shear, n)
    chosen = _chosen(rng, n, p)
    theta[~chosen], zoom[~chosen], k[~chosen] = 0.0, 1.0, 0.0
    cos, sin = np.cos(theta), np.sin(theta)
    # (rotation @ shear) / zoom, written out: shear = [[1, k], [0, 1]]
    A = np.empty((n, 2, 2))
    A[:, 0, 0], A[:, 0, 1] = cos, cos * k - sin
    A[:, 1, 0], A[:, 1, 1] = sin, sin * k + cos
    return A / zoom[:, None, None], chosen


def elastic_field(rng, n: int, alpha: float, sigma: float, p: float) -> np.ndarray:
    """`(2, n, 28, 28)` displacements (Simard et al. 2003): uniform(-1, 1) noise smoothed by
    a Gaussian of std `sigma`, scaled by `alpha`; zero for images not chosen."""
    from scipy.ndimage import gaussian_filter

    noise = rng.uniform(-1.0, 1.0, size=(2, n, SIZE, SIZE)).astype(np.float32)
    chosen = _chosen(rng, n, p)
    field = gaussian_filter(noise, sigma=(0, 0, sigma, sigma), mode="constant", truncate=3.0)
    field *= np.float32(alpha)
    field[:, ~chosen] = 0
    return field


def resample(x: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Bilinear sampling of `x` `(n, 28, 28)` at `coords` `(2, n, 28, 28)` (row, col); 0 outside."""
    from scipy.ndimage import map_coordinates

    n = len(x)
    batch = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, SIZE, SIZE))
    full = np.stack([batch, coords[0], coords[1]])
    return map_coordinates(x, full, order=1, mode="constant", cval=0.0, prefilter=False)


def geometric(x, rng, affine_cfg=None, elastic_cfg=None) -> np.ndarray:
    """Affine and elastic distortion in one resampling pass (either may be None)."""
    n = len(x)
    grid = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) - (SIZE - 1) / 2  # (2, 28, 28)
    coords = np.broadcast_to(grid[:, None], (2, n, SIZE, SIZE)).copy()
    touched = np.zeros(n, bool)
    if affine_cfg is not None and affine_cfg.p > 0:
        A, chosen = affine_matrices(rng, n, affine_cfg.degrees, affine_cfg.scale,
                                    affine_cfg.shear, affine_cfg.p)
        # source (row, col) of each output pixel, about the image centre
        coords = np.einsum("nij,jnhw->inhw", A.astype(np.float32), coords)
        touched |= chosen
    if elastic_cfg is not None and elastic_cfg.p > 0 and elastic_cfg.alpha > 0:
        field = elastic_field(rng, n, elastic_cfg.alpha, elastic_cfg.sigma, elastic_cfg.p)
        coords += field
        touched |= field.any(axis=(0, 2, 3))
    if not touched.any():
        return x
    coords += (SIZE - 1) / 2
    out = x.copy()
    out[touched] = resample(x[touched], coords[:, touched])
    return out


def invert(x: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Black-on-white for the chosen images: pixel -> 1 - pixel."""
    chosen = _chosen(rng, len(x), p)
    if chosen.any():
        x = x.copy()
        x[chosen] = 1 - x[chosen]
    return x


def random_colors(rng, n: int, min_contrast: float) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground intensities `(n,)` in [0, 1] with |fg - bg| >= min_contrast,
    covering every combination: dark on light as often as light on dark."""
    contrast = rng.uniform(min_contrast, 1.0, n)
    low = rng.uniform(0.0, 1.0, n) * (1.0 - contrast)
    dark_background = rng.random(n) < 0.5
    bg = np.where(dark_background, low, low + contrast)
    fg = np.where(dark_background, low + contrast, low)
    return bg, fg


def colorize(x: np.ndarray, bg: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """pixel' = bg + (fg - bg) * pixel, per image (pixels in [0, 1])."""
    bg = bg.astype(x.dtype)[:, None, None]
    fg = fg.astype(x.dtype)[:, None, None]
    return bg + (fg - bg) * x


def colors(x: np.ndarray, rng: np.random.Generator, p: float, min_contrast: float) -> np.ndarray:
    """Random foreground/background intensities for the chosen images."""
    n = len(x)
    bg, fg = random_colors(rng, n, min_contrast)
    chosen = _chosen(rng, n, p)
    bg[~chosen], fg[~chosen] = 0.0, 1.0  # identity for the rest
    return colorize(x, bg, fg) if chosen.any() else x


def noise(x: np.ndarray, rng: np.random.Generator, p: float, std: float) -> np.ndarray:
    """Add N(0, std^2) to every pixel of the chosen images, clipped to [0, 1]."""
    chosen = _chosen(rng, len(x), p)
    if not chosen.any() or std == 0:
        return x
    out = x.copy()
    sub = out[chosen]
    sub += rng.standard_normal(sub.shape, dtype=np.float32).astype(x.dtype) * x.dtype.type(std)
    np.clip(sub, 0.0, 1.0, out=sub)
    out[chosen] = sub
    return out


def is_active(cfg) -> bool:
    """Whether an augment config changes anything at all."""
    return any(getattr(cfg, name).p > 0 for name in ("shift", "affine", "elastic", "invert",
                                                     "colors", "noise"))


def augment_batch(x: np.ndarray, rng: np.random.Generator, cfg) -> np.ndarray:
    """All configured transforms in a fixed order: shift, affine+elastic, invert, colors, noise."""
    if cfg.shift.p > 0:
        x = shift(x, rng, cfg.shift.pixels, cfg.shift.p)
    if cfg.affine.p > 0 or cfg.elastic.p > 0:
        x = geometric(x, rng, cfg.affine, cfg.elastic)
    if cfg.invert.p > 0:
        x = invert(x, rng, cfg.invert.p)
    if cfg.colors.p > 0:
        x = colors(x, rng, cfg.colors.p, cfg.colors.min_contrast)
    if cfg.noise.p > 0:
        x = noise(x, rng, cfg.noise.p, cfg.noise.std)
    return x
