"""Scoring a network on a split: loss, accuracy, confusion matrix, per-class precision/recall,
and the evaluation-time image changes (inverted colours, random colours).

`evaluate` is what `mnist-bp evaluate`, training's validation and test numbers, and the report
all use: one forward pass over the split in chunks, the loss summed and divided once by N.
Functions return dicts; the commands present them.
"""

from __future__ import annotations

import numpy as np

from mnist_bp import rng
from mnist_bp.data import augment
from mnist_bp.data.batches import BatchMaker
from mnist_bp.data.registry import IMAGE_SIDE, NUM_CLASSES


def evaluate(model, loss_fn, maker: BatchMaker, batch_size: int = 2000, transform=None,
             keep_outputs: bool = False) -> dict:
    """Forward pass over the whole split in chunks; loss summed, divided once by N.
    `keep_outputs` adds the network's outputs `(N, 10)` as `outputs`."""
    n = len(maker)
    loss_sum = 0.0
    confusion = np.zeros(NUM_CLASSES * NUM_CLASSES, np.int64)
    outputs = np.empty((n, NUM_CLASSES), np.float32) if keep_outputs else None
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        x, y = maker.slice(start, stop, transform)
        out = model.forward(x, training=False)
        if keep_outputs:
            outputs[start:stop] = out
        loss_sum += loss_fn.forward(out, y) * (stop - start)
        pred = out.argmax(axis=1)
        confusion += np.bincount(y.astype(np.int64) * NUM_CLASSES + pred,
                                 minlength=NUM_CLASSES * NUM_CLASSES)
    confusion = confusion.reshape(NUM_CLASSES, NUM_CLASSES)  # rows: true, columns: predicted
    result = {"accuracy": float(np.trace(confusion) / max(n, 1)), "loss": loss_sum / max(n, 1),
              "n": int(n), "confusion_matrix": confusion}
    if keep_outputs:
        result["outputs"] = outputs
    return result


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


def random_colors_transform(n: int, generator: np.random.Generator,
                            min_contrast: float = 0.4):
    """A transform giving image i of the split its own foreground/background intensities."""
    bg, fg = augment.random_colors(generator, n, min_contrast)

    def transform(unit, start, stop):
        shaped = unit.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
        return augment.colorize(shaped, bg[start:stop], fg[start:stop]).reshape(unit.shape)

    return transform


def make_transform(n: int, invert: bool, colors: str, seed: int):
    """The evaluation-time image change asked for (None for plain images)."""
    steps = []
    if colors == "random":
        steps.append(random_colors_transform(n, rng.stream(seed, rng.EVAL_COLORS)))
    if invert:
        steps.append(invert_transform)
    if not steps:
        return None

    def transform(unit, start, stop):
        for step in steps:
            unit = step(unit, start, stop)
        return unit

    return transform
