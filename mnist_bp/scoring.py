"""`mnist-bp evaluate`: load a checkpoint and a split, score it, format the report."""

from __future__ import annotations

from pathlib import Path

from mnist_bp import checkpoint, rng
from mnist_bp.batches import BatchMaker, Normalizer
from mnist_bp.config import from_dict
from mnist_bp.evaluate import evaluate, invert_transform, per_class, random_colors_transform
from mnist_bp.losses import make_loss
from mnist_bp.model import MLP


def load_model(path: Path):
    """(model, config, meta) rebuilt from a checkpoint."""
    params, _, meta = checkpoint.load(path)
    cfg = from_dict(meta["config"])
    model = MLP(cfg.model, rng.stream(cfg.seed, rng.INIT))
    checkpoint.check_shapes(path, model.parameters(), params)
    model.load_parameters(params)
    return model, cfg, meta


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
    from mnist_bp.data import load_dataset

    model, cfg, meta = load_model(path)
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
