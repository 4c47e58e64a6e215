"""`mnist-bp augment-preview`: a PNG grid of training images as the network sees them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_bp import rng
from mnist_bp.data.augment import augment_batch
from mnist_bp.fsutil import atomic_write

GRID_COLUMNS = 8
PAD = 2


def grid(images: np.ndarray, columns: int = GRID_COLUMNS) -> np.ndarray:
    """uint8 `(H, W)` mosaic of `(n, 28, 28)` images in [0, 1], rows of `columns`."""
    n = len(images)
    rows = -(-n // columns)
    cell = 28 + PAD
    canvas = np.full((rows * cell + PAD, columns * cell + PAD), 128, np.uint8)
    for i in range(n):  # a preview image, not the training hot path
        r, c = divmod(i, columns)
        canvas[PAD + r * cell:PAD + r * cell + 28, PAD + c * cell:PAD + c * cell + 28] = \
            np.clip(images[i] * 255 + 0.5, 0, 255).astype(np.uint8)
    return canvas


def interleave(original: np.ndarray, augmented: np.ndarray,
               columns: int = GRID_COLUMNS) -> np.ndarray:
    """Rows of originals, each followed by the same images augmented."""
    out = []
    for start in range(0, len(original), columns):
        out += [original[start:start + columns], augmented[start:start + columns]]
        short = columns - len(original[start:start + columns])
        if short:
            out[-2] = np.concatenate([out[-2], np.zeros((short, 28, 28), original.dtype)])
            out[-1] = np.concatenate([out[-1], np.zeros((short, 28, 28), original.dtype)])
    return np.concatenate(out)


def write_preview(cfg, data_dir, out: Path, count: int, scale: int = 3) -> None:
    from PIL import Image

    from mnist_bp.data.datadir import load_dataset

    train = load_dataset(cfg.data.dataset, data_dir).train
    order = rng.stream(cfg.seed, rng.SHUFFLE, 0).permutation(len(train))[:count]
    original = np.asarray(train.images[np.sort(order)], dtype=np.float32) / 255
    augmented = augment_batch(original, rng.stream(cfg.seed, rng.AUGMENT, 0, 0), cfg.augment)
    mosaic = grid(interleave(original, augmented))
    image = Image.fromarray(mosaic).resize((mosaic.shape[1] * scale, mosaic.shape[0] * scale),
                                           Image.NEAREST)
    with atomic_write(Path(out)) as f:
        image.save(f, format="PNG")
