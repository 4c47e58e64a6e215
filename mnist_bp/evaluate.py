"""`mnist-bp evaluate`: score a checkpoint on a split, and the scoring maths it uses.

    mnist-bp evaluate runs/x/checkpoints/best.npz --invert --json

`evaluate` (one forward pass over a split in chunks; loss summed, divided once by N) and
`per_class` are also what training uses for its validation and test numbers. Functions
return dicts; the CLI prints them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_bp import checkpoint, rng
from mnist_bp.data import augment
from mnist_bp.data.batches import BatchMaker, Normalizer
from mnist_bp.nn.losses import make_loss

NUM_CLASSES = 10


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


def random_colors_transform(n: int, rng: np.random.Generator, min_contrast: float = 0.4):
    """A transform giving image i of the split its own foreground/background intensities."""
    bg, fg = augment.random_colors(rng, n, min_contrast)

    def transform(unit, start, stop):
        shaped = unit.reshape(-1, 28, 28)
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


def score_checkpoint(path: Path, data_dir, dataset: str | None, split: str, invert: bool,
                     colors: str, seed: int, log=None) -> dict:
    """What `mnist-bp evaluate` reports, as a dict (`--json` prints it as is)."""
    from mnist_bp.data.datadir import load_dataset

    model, cfg, meta = checkpoint.load_model(path)
    name = dataset or cfg.data.dataset
    data = getattr(load_dataset(name, data_dir, log=log), split)
    maker = BatchMaker(data.images, data.labels, Normalizer(**meta["normalization"]))
    transform = make_transform(len(data), invert, colors, seed)
    result = evaluate(model, make_loss(cfg.loss), maker, cfg.training.eval_batch_size, transform)
    images = "inverted " if invert else ""
    images += "random-colour " if colors == "random" else ""
    return {
        "checkpoint": str(path),
        "epoch": meta["progress"]["epoch"],
        "dataset": name,
        "split": split,
        "images": (images + "images").strip(),
        "invert": invert,
        "colors": colors,
        "accuracy": result["accuracy"],
        "loss": result["loss"],
        "n": result["n"],
        "per_class": per_class(result["confusion_matrix"]),
        "confusion_matrix": result["confusion_matrix"].tolist(),
    }


def format_report(r: dict) -> str:
    lines = [
        f"checkpoint  {r['checkpoint']} (after epoch {r['epoch']})",
        f"data        {r['dataset']} {r['split']} split, {r['n']} {r['images']}",
        f"accuracy    {r['accuracy']:.4f}",
        f"loss        {r['loss']:.4f}",
        "",
        "class  precision  recall  f1      support",
    ]
    for c in r["per_class"]:
        lines.append(f"{c['class']:<6} {c['precision']:<10.4f} {c['recall']:<7.4f} "
                     f"{c['f1']:<7.4f} {c['support']}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)",
              "      " + "".join(f"{k:>6}" for k in range(len(r["confusion_matrix"])))]
    for k, row in enumerate(r["confusion_matrix"]):
        lines.append(f"{k:>6}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)
