"""Scoring a model on a split: loss, accuracy, confusion matrix, per-class precision/recall/F1.

Pure computation: returns dicts; the CLI prints them.
"""

from __future__ import annotations

import numpy as np

from mnist_bp import augment
from mnist_bp.batches import BatchMaker

NUM_CLASSES = 10


def evaluate(model, loss_fn, maker: BatchMaker, batch_size: int = 2000, transform=None) -> dict:
    """Forward pass over the whole split in chunks; loss summed, divided once by N."""
    n = len(maker)
    loss_sum = 0.0
    confusion = np.zeros(NUM_CLASSES * NUM_CLASSES, np.int64)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        x, y = maker.slice(start, stop, transform)
        out = model.forward(x, training=False)
        loss_sum += loss_fn.forward(out, y) * (stop - start)
        pred = out.argmax(axis=1)
        confusion += np.bincount(y.astype(np.int64) * NUM_CLASSES + pred,
                                 minlength=NUM_CLASSES * NUM_CLASSES)
    confusion = confusion.reshape(NUM_CLASSES, NUM_CLASSES)  # rows: true, columns: predicted
    return {"accuracy": float(np.trace(confusion) / max(n, 1)), "loss": loss_sum / max(n, 1),
            "n": int(n), "confusion_matrix": confusion}


def per_class(confusion: np.ndarray) -> list[dict]:
    """Precision, recall, F1 and support of each class from a confusion matrix."""
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return [{"class": k, "precision": float(precision[k]), "recall": float(recall[k]),
             "f1": float(f1[k]), "support": int(support[k])} for k in range(len(tp))]


def invert_transform(unit, start, stop):
    """White-on-black becomes black-on-white: pixel -> 1 - pixel."""
    return 1 - unit


def random_colors_transform(n: int, rng: np.random.Generator, min_contrast: float = 0.4):
    """A transform giving image i of the split its own foreground/background intensities."""
    bg, fg = augment.random_colors(rng, n, min_contrast)

    def transform(unit, start, stop):
        shaped = unit.reshape(-1, 28, 28)
        return augment.colorize(shaped, bg[start:stop], fg[start:stop]).reshape(unit.shape)

    return transform
