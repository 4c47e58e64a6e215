"""Data augmentation on batches of images `(B, 28, 28)` float32 in [0, 1].

Every transform works on the whole batch at once (no per-image Python loop), draws its
randomness from the generator it is given (one per training step, derived from the run's
seed, so resume stays bit-exact) and applies to each image with its own probability `p`.
Geometric transforms (shift, affine, elastic) are resampled together in one pass.
"""

from __future__ import annotations

import numpy as np

from mnist_bp.data.registry import IMAGE_SIDE as SIZE


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
    # Every 28x28 window of each padded image, as a view `(n, 2s+1, 2s+1, 28, 28)`; indexing
    # one window per image copies whole blocks instead of gathering pixel by pixel.
    windows = np.lib.stride_tricks.sliding_window_view(padded, (SIZE, SIZE), axis=(1, 2))
    return windows[np.arange(n), s - offsets[0], s - offsets[1]]


def flip(x: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Mirror the chosen images left-right."""
    chosen = _chosen(rng, len(x), p)
    if not chosen.any():
        return x
    out = x.copy()
    out[chosen] = x[chosen, :, ::-1]
    return out


def erase(x: np.ndarray, rng: np.random.Generator, p: float, min_area: float,
          max_area: float, max_aspect: float) -> np.ndarray:
    """Random erasing (Zhong et al. 2017): a rectangle of each chosen image, covering a
    fraction of it drawn from [min_area, max_area] with height/width drawn log-uniformly from
    [1/max_aspect, max_aspect], is filled with uniform noise. The rectangle is cut at the
    image's edges; its top-left corner is uniform over the image."""
    n = len(x)
    chosen = _chosen(rng, n, p)
    area = rng.uniform(min_area, max_area, n) * SIZE * SIZE
    log_aspect = np.log(max_aspect)
    aspect = np.exp(rng.uniform(-log_aspect, log_aspect, n))
    h = np.clip(np.rint(np.sqrt(area * aspect)), 1, SIZE).astype(np.intp)
    w = np.clip(np.rint(np.sqrt(area / aspect)), 1, SIZE).astype(np.intp)
    top = (rng.random(n) * (SIZE - h + 1)).astype(np.intp)
    left = (rng.random(n) * (SIZE - w + 1)).astype(np.intp)
    fill = rng.random((n, SIZE, SIZE), dtype=np.float32)
    if not chosen.any():
        return x
    ar = np.arange(SIZE)
    rows = (ar >= top[:, None]) & (ar < (top + h)[:, None])  # (n, 28)
    cols = (ar >= left[:, None]) & (ar < (left + w)[:, None])
    mask = rows[:, :, None] & cols[:, None, :] & chosen[:, None, None]
    return np.where(mask, fill.astype(x.dtype, copy=False), x)


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


def gaussian_matrix(sigma: float, size: int = SIZE, truncate: float = 3.0) -> np.ndarray:
    """`(size, size)` matrix G with G @ v = v convolved with a normalised Gaussian of std
    `sigma` (cut at `truncate` sigmas), zeros beyond the edges."""
    radius = int(truncate * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    offsets = np.arange(size)[None, :] - np.arange(size)[:, None]  # j - i
    G = np.where(np.abs(offsets) <= radius, taps[np.clip(offsets + radius, 0, 2 * radius)], 0)
    return G.astype(np.float32)


def elastic_field(rng, n: int, alpha: float, sigma: float, p: float):
    """Displacements `(2, n, 28, 28)` and which images got one `(n,)`, as Simard et al.
    (2003): uniform(-1, 1) noise smoothed by a Gaussian of std `sigma`, scaled by `alpha`;
    zero for images not chosen.

    The Gaussian is separable, so smoothing is two matrix products over the whole batch,
    the same as a zero-padded Gaussian filter and far faster.
    """
    noise = rng.random((2 * n, SIZE, SIZE), dtype=np.float32)
    noise *= 2
    noise -= 1  # uniform in (-1, 1)
    chosen = _chosen(rng, n, p)
    G = gaussian_matrix(sigma)  # symmetric
    # smooth along columns, then along rows: each one matrix product over the whole batch
    field = (noise.reshape(-1, SIZE) @ G).reshape(2 * n, SIZE, SIZE).transpose(0, 2, 1)
    field = (field.reshape(-1, SIZE) @ G).reshape(2 * n, SIZE, SIZE).transpose(0, 2, 1)
    field = field.reshape(2, n, SIZE, SIZE) * np.float32(alpha)
    field[:, ~chosen] = 0
    return field, chosen


def resample(x: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Bilinear sampling of `x` `(n, 28, 28)` at `coords` `(2, n, 28, 28)` (row, col), 0
    outside the image: the four neighbours gathered from a zero-padded copy in one `take`,
    weighted."""
    n = len(x)
    P = SIZE + 3  # padded side: index 0 is row/col -1, indices 29 and 30 are zero beyond
    padded = np.zeros((n, P, P), x.dtype)
    padded[:, 1:SIZE + 1, 1:SIZE + 1] = x
    r = np.clip(coords[0], -1, SIZE)  # beyond -1 or 28 everything is 0 anyway
    c = np.clip(coords[1], -1, SIZE)
    r0, c0 = np.floor(r), np.floor(c)
    fr, fc = np.subtract(r, r0, out=r), np.subtract(c, c0, out=c)
    # index of each (row r0, col c0) in the flat padded batch, then of its three neighbours
    base = r0.astype(np.intp)
    base *= P
    base += c0.astype(np.intp)
    base += (np.arange(n) * (P * P) + P + 1)[:, None, None]
    corners = np.take(padded.ravel(), base + np.array([0, 1, P, P + 1])[:, None, None, None])
    top, right, bottom, bottom_right = corners
    right -= top
    right *= fc
    top += right  # along the top row
    bottom_right -= bottom
    bottom_right *= fc
    bottom += bottom_right  # along the bottom row
    bottom -= top
    bottom *= fr
    top += bottom  # between the two
    return top


def geometric(x, rng, affine_cfg=None, elastic_cfg=None) -> np.ndarray:
    """Affine and elastic distortion in one resampling pass (either may be None)."""
    n = len(x)
    centre = (SIZE - 1) / 2
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) - np.float32(centre)
    touched = np.zeros(n, bool)
    if affine_cfg is not None and affine_cfg.p > 0:
        A, chosen = affine_matrices(rng, n, affine_cfg.degrees, affine_cfg.scale,
                                    affine_cfg.shear, affine_cfg.p)
        A = A.astype(np.float32)[:, :, :, None, None]  # (n, 2, 2, 1, 1)
        # source (row, col) of each output pixel, about the image centre
        coords = np.stack([A[:, 0, 0] * rows + A[:, 0, 1] * cols,
                           A[:, 1, 0] * rows + A[:, 1, 1] * cols])  # (2, n, 28, 28)
        touched |= chosen
    else:
        coords = np.stack([np.broadcast_to(rows, (n, SIZE, SIZE)),
                           np.broadcast_to(cols, (n, SIZE, SIZE))])
    if elastic_cfg is not None and elastic_cfg.p > 0 and elastic_cfg.alpha > 0:
        field, chosen = elastic_field(rng, n, elastic_cfg.alpha, elastic_cfg.sigma,
                                      elastic_cfg.p)
        coords += field
        touched |= chosen
    if not touched.any():
        return x
    coords += np.float32(centre)
    if touched.all():
        return resample(x, coords)
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


TRANSFORMS = ("shift", "flip", "affine", "elastic", "invert", "colors", "erase", "noise")


def is_active(cfg) -> bool:
    """Whether an augment config changes anything at all."""
    return any(getattr(cfg, name).p > 0 for name in TRANSFORMS)


def augment_batch(x: np.ndarray, rng: np.random.Generator, cfg) -> np.ndarray:
    """All configured transforms in a fixed order: shift, flip, affine+elastic, invert, colors,
    erase, noise. A transform with p = 0 draws nothing, so adding one to a config leaves the
    random draws of the others as they were."""
    if cfg.shift.p > 0:
        x = shift(x, rng, cfg.shift.pixels, cfg.shift.p)
    if cfg.flip.p > 0:
        x = flip(x, rng, cfg.flip.p)
    if cfg.affine.p > 0 or cfg.elastic.p > 0:
        x = geometric(x, rng, cfg.affine, cfg.elastic)
    if cfg.invert.p > 0:
        x = invert(x, rng, cfg.invert.p)
    if cfg.colors.p > 0:
        x = colors(x, rng, cfg.colors.p, cfg.colors.min_contrast)
    if cfg.erase.p > 0:
        e = cfg.erase
        x = erase(x, rng, e.p, e.min_area, e.max_area, e.max_aspect)
    if cfg.noise.p > 0:
        x = noise(x, rng, cfg.noise.p, cfg.noise.std)
    return x
