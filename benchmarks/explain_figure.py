"""The figures of docs/explain.md: the book's lesson seen from inside.

    python benchmarks/explain_figure.py --default runs/default/checkpoints/best.npz \
        --robust runs/robust/checkpoints/best.npz --data-dir D --out docs/

`explain-lesson.png`: the same test digits, as MNIST stores them and inverted (black on
white), each shown with what `default.yaml`'s and `mnist-robust.yaml`'s networks read and
their attributions (by each model's default method) for the digit they read.
`explain-mistakes.png`: the report's "What the network looks at" for the default run.
It also prints, per model, where the attribution mass sits on inverted digits: the share of
the absolute attribution on ink pixels (the digit's strokes) against the background.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mnist_bp.data.datadir import load_dataset
from mnist_bp.explain import explain
from mnist_bp.model import load

DIGITS = (0, 1, 2, 3)  # test images shown (a 7, 2, 1 and 0)


def ink_share(images: np.ndarray, attributions: np.ndarray) -> float:
    """Share of |attribution| on the digit's own strokes (MNIST pixel > 0.3)."""
    a = np.abs(attributions)
    ink = images > 0.3
    return float((a * ink).sum() / a.sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--default", type=Path, required=True)
    ap.add_argument("--robust", type=Path, required=True)
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = {"default.yaml": load(args.default), "mnist-robust.yaml": load(args.robust)}
    test = load_dataset("mnist", args.data_dir).test
    normal = np.asarray(test.images[:1000], np.float32) / 255
    inverted = 1 - normal
    for name, model in models.items():
        for label, x in (("normal", normal), ("inverted", inverted)):
            e = explain(model, x)
            acc = float(np.mean(e.digits == np.asarray(test.labels[:1000])))
            print(f"{name} {label}: accuracy {acc:.3f} on the first 1000 test images, "
                  f"{e.method}, share of |attribution| on the strokes "
                  f"{ink_share(normal, e.attributions):.2f}")

    shown = [(label, x[list(DIGITS)]) for label, x in (("as MNIST stores it", normal),
                                                       ("inverted", inverted))]
    half = 1 + len(models)
    fig, axes = plt.subplots(len(DIGITS), 2 * half + 1, squeeze=False,  # a gap between halves
                             figsize=(10.5, 1.55 * len(DIGITS) + 0.6),
                             gridspec_kw={"width_ratios": [1] * half + [0.25] + [1] * half})
    for ax in axes.flat:
        ax.axis("off")
    col = 0
    for label, x in shown:
        for r in range(len(DIGITS)):
            axes[r, col].imshow(x[r], cmap="gray", vmin=0, vmax=1)
        axes[0, col].set_title(label, fontsize=8)
        col += 1
        for name, model in models.items():
            e = explain(model, x)
            for r in range(len(DIGITS)):
                a = e.attributions[r]
                m = float(np.abs(a).max()) or 1.0
                axes[r, col].imshow(x[r], cmap="gray", vmin=0, vmax=1, alpha=0.35)
                axes[r, col].imshow(a, cmap="RdBu_r", vmin=-m, vmax=m, alpha=0.85)
                axes[r, col].set_title(f"reads {e.digits[r]} ({e.probabilities[r]:.2f})",
                                       fontsize=7)
            axes[0, col].text(0.5, 1.35, name, transform=axes[0, col].transAxes, ha="center",
                              fontsize=8)
            col += 1
        col += 1  # a gap between the normal and the inverted half
    fig.suptitle("what each network looks at for the digit it reads: red raises that digit's "
                 "probability, blue lowers it", fontsize=9)
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "explain-lesson.png", dpi=110)
    plt.close(fig)

    from mnist_bp import report

    run = report.read_run(args.default.parent.parent)
    report.score_run(run, args.data_dir)
    fig = report.explain_figure(plt, [run])
    fig.savefig(args.out / "explain-mistakes.png", dpi=100)
    plt.close(fig)
    print(f"wrote {args.out / 'explain-lesson.png'} and {args.out / 'explain-mistakes.png'}")


if __name__ == "__main__":
    main()
