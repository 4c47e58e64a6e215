"""`mnist-bp evaluate`: score a checkpoint on a split and present the numbers.

    mnist-bp evaluate runs/x/checkpoints/best.npz --invert --json

The scoring maths is in scoring.py; loading the checkpoint in model.py.
"""

from __future__ import annotations

from pathlib import Path

from mnist_bp.model import load


def score_checkpoint(path: Path, data_dir, dataset: str | None, split: str, invert: bool,
                     colors: str, seed: int, log=None) -> dict:
    """What `mnist-bp evaluate` reports, as a dict (`--json` prints it as is)."""
    return load(path).evaluate(dataset, split, data_dir, invert, colors, seed, log=log)


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
